"""`listen.tls`: HTTPS on the proxy port, and the one place its SSLContext is made.

The loader checks the files by making the very context the listener serves with
(`server_context`), so a certificate that loads at check time is one that serves, and a
reload that cannot load its certificate is refused before anything changes.

Protocols and ciphers follow Mozilla's "intermediate" profile (TLS 1.2 and 1.3, forward-secret
AEAD suites for 1.2; 1.3's suites are OpenSSL's own, as Mozilla's profile says). The DHE suites
of that profile are left out: Python's SSLContext loads no DH parameters, so they could never
be chosen.
"""

from __future__ import annotations

import ssl
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from proxy.config.section import Model

INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# A PEM file is a few KiB; a path pointing at something huge (a disk image) is a mistake.
_MAX_FILE = 1024 * 1024


class _Encrypted(Exception):
    """The key file asked for a password: the proxy has none to give (never a prompt)."""


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, hanging a start or a reload.
    raise _Encrypted


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_FILE + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror}") from None
    if len(data) > _MAX_FILE:
        raise ValueError(f"{path!r} is over {_MAX_FILE // 1024} KiB: not a PEM file")
    return data


def check_cert_file(path: str) -> str:
    """`path` readable and holding PEM certificates; ValueError saying what is wrong."""
    data = _read(path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError):
        raise ValueError(
            f"{path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    return path


def check_key_file(path: str) -> str:
    if b"PRIVATE KEY-----" not in _read(path):
        raise ValueError(f"{path!r} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
    return path


def load_pair(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Load the certificate chain and its key into `context`; ValueError saying what is wrong
    (each file alone is assumed checked: check_cert_file, check_key_file)."""
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except _Encrypted:
        raise ValueError(
            f"{key_file!r} is encrypted: the proxy takes an unencrypted key "
            "(readable by its user alone)"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"{key_file!r} is not the key of the certificate in {cert_file!r}"
            ) from None
        raise ValueError(f"{cert_file!r} with {key_file!r}: {exc.reason or exc}") from None
    except OSError as exc:  # a file went between the checks and this
        raise ValueError(f"cannot read {exc.filename or key_file!r}: {exc.strerror}") from None


class TlsSettings(Model):
    cert_file: str = Field(
        description="PEM file with the server's certificate, then the intermediates clients "
        "need to reach a root they trust. Re-read on reload (SIGHUP).",
        examples=["/etc/cacheproxy/tls/fullchain.pem"],
    )
    key_file: str = Field(
        description="PEM file with the certificate's private key, unencrypted. Re-read on "
        "reload (SIGHUP).",
        examples=["/etc/cacheproxy/tls/privkey.pem"],
    )
    min_version: Literal["1.2", "1.3"] = Field(
        "1.2",
        description="The oldest TLS version accepted: 1.2 (and 1.3, Mozilla's 'intermediate' "
        "profile) or 1.3 alone.",
        examples=["1.3"],
    )

    _cert = field_validator("cert_file")(check_cert_file)

    @field_validator("key_file")
    @classmethod
    def _key(cls, value: str, info: ValidationInfo) -> str:
        check_key_file(value)
        cert_file = info.data.get("cert_file")
        if cert_file is not None:  # else cert_file's own problem is reported
            load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_file, value)
        return value

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # YAML reads `min_version: 1.2` as a number.
        return str(value) if isinstance(value, float) else value


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The proxy port's SSLContext; ValueError, saying why, when its files do not load."""
    check_cert_file(tls.cert_file)
    check_key_file(tls.key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.set_ciphers(INTERMEDIATE_CIPHERS)  # TLS 1.2's; 1.3's are not set by this
    # Client-initiated renegotiation costs the server a handshake per request of the client.
    context.options |= ssl.OP_NO_RENEGOTIATION
    # HTTP/1.1 is all the port speaks: a client offering only h2 gets no ALPN answer and
    # (like curl) falls back to HTTP/1.1 or gives up, never speaks h2 to an HTTP/1.1 server.
    context.set_alpn_protocols(["http/1.1"])
    load_pair(context, tls.cert_file, tls.key_file)
    return context
