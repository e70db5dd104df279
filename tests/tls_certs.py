"""Certificates for the TLS tests, made with openssl's command line.

`cryptography` is not in the lock and openssl is on every machine the tests run on
(scripts/test.sh installs it), so each helper runs one or two openssl commands. Keys are
EC P-256: made in milliseconds, where RSA 2048 takes a noticeable part of a second.

A test CA signs leaf certificates for 127.0.0.1 and localhost; a client trusting the CA
accepts every leaf, so a test can swap the served certificate and still verify it, and
tell which one it got by its DER bytes (`Pair.der`).
"""

from __future__ import annotations

import itertools
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

_serials = itertools.count(1)

_CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {names}
"""


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path

    @property
    def der(self) -> bytes:
        """The certificate as a TLS peer sends it (SSLObject.getpeercert(binary_form=True))."""
        return ssl.PEM_cert_to_DER_cert(self.cert.read_text())


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise RuntimeError("the TLS tests need the openssl command: apt-get install openssl")
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"openssl {' '.join(args)}: {done.stderr.strip()}")


def _key(path: Path) -> None:
    curve = "ec_paramgen_curve:P-256"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", curve, "-out", str(path))


def make_ca(directory: Path, name: str = "cacheproxy test CA") -> Pair:
    """A self-signed CA, valid two days, in `directory` (made if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    serial = next(_serials)
    pair = Pair(directory / f"ca-{serial}.pem", directory / f"ca-{serial}.key")
    _key(pair.key)
    extensions = directory / f"ca-{serial}.ext"
    extensions.write_text(_CA_EXTENSIONS)
    csr = directory / f"ca-{serial}.csr"
    _openssl("req", "-new", "-key", str(pair.key), "-subj", f"/CN={name}", "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-signkey", str(pair.key), "-days", "2",
        "-set_serial", str(serial), "-extfile", str(extensions), "-out", str(pair.cert),
    )  # fmt: skip
    return pair


def make_cert(
    directory: Path,
    ca: Pair,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    name: str | None = None,
    usage: str = "serverAuth",
) -> Pair:
    """A server certificate for `hosts` (IP addresses or DNS names) signed by `ca`, valid two
    days, in `directory`; each call makes a new key and serial, so two are never the same.
    `usage="clientAuth"`: a client certificate, for mutual TLS."""
    directory.mkdir(parents=True, exist_ok=True)
    serial = next(_serials)
    pair = Pair(directory / f"cert-{serial}.pem", directory / f"cert-{serial}.key")
    _key(pair.key)
    names = ", ".join(f"IP:{h}" if h[:1].isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    extensions = directory / f"cert-{serial}.ext"
    extensions.write_text(_LEAF_EXTENSIONS.format(names=names, usage=usage))
    csr = directory / f"cert-{serial}.csr"
    subject = f"/CN={name or hosts[0]}"
    _openssl("req", "-new", "-key", str(pair.key), "-subj", subject, "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-days", "2", "-set_serial", str(serial), "-extfile", str(extensions),
        "-out", str(pair.cert),
    )  # fmt: skip
    return pair


def client_context(
    ca: Pair,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A verifying client context that trusts `ca` alone, limited to versions if given."""
    context = ssl.create_default_context(cafile=str(ca.cert))
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context
