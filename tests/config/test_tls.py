"""`listen.tls` as the loader takes it: every bad file named by its key path, with what is
wrong, before anything listens."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from proxy.config.loader import ConfigError, Settings, parse_config
from proxy.config.tls import INTERMEDIATE_CIPHERS, server_context
from tests.tls_certs import Pair, make_ca, make_cert


def _load(listen: str, environ: dict[str, str] | None = None) -> Settings:
    return parse_config(f"upstream: {{url: http://a}}\nlisten: {listen}\n", env=environ or {})


def _problems(listen: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _load(listen)
    return caught.value.problems


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pair, Pair, Pair]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    return ca, make_cert(directory, ca), make_cert(directory, ca)


def _tls(cert: object, key: object, more: str = "") -> str:
    return f"{{tls: {{cert_file: '{cert}', key_file: '{key}'{more}}}}}"


def test_a_good_pair_loads_and_makes_the_served_context(pki: tuple[Pair, Pair, Pair]) -> None:
    _, leaf, _ = pki
    tls = _load(_tls(leaf.cert, leaf.key, ", min_version: 1.3")).listen.tls
    assert tls is not None and tls.min_version == "1.3"  # YAML's number taken as the version
    context = server_context(tls)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert _load(_tls(leaf.cert, leaf.key)).listen.tls.min_version == "1.2"  # type: ignore[union-attr]
    # TLS 1.2's suites are the profile's, all forward-secret AEAD ones.
    names = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names == set(INTERMEDIATE_CIPHERS.split(":"))


def test_missing_and_unreadable_files_are_named(
    pki: tuple[Pair, Pair, Pair], tmp_path: Path
) -> None:
    _, leaf, _ = pki
    assert _problems(_tls(tmp_path / "nope.pem", leaf.key)) == [
        f"listen.tls.cert_file: cannot read '{tmp_path}/nope.pem': No such file or directory"
    ]
    assert _problems(_tls(leaf.cert, tmp_path)) == [
        f"listen.tls.key_file: cannot read '{tmp_path}': Is a directory"
    ]


def test_files_that_hold_the_wrong_thing_are_named(pki: tuple[Pair, Pair, Pair]) -> None:
    _, leaf, _ = pki
    assert _problems(_tls(leaf.key, leaf.cert)) == [
        f"listen.tls.cert_file: '{leaf.key}' holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----)",
        f"listen.tls.key_file: '{leaf.cert}' holds no PEM private key "
        "(-----BEGIN PRIVATE KEY-----)",
    ]


def test_a_key_of_another_certificate_is_refused(pki: tuple[Pair, Pair, Pair]) -> None:
    _, leaf, other = pki
    assert _problems(_tls(leaf.cert, other.key)) == [
        f"listen.tls.key_file: '{other.key}' is not the key of the certificate in '{leaf.cert}'"
    ]


def test_an_encrypted_key_is_refused_without_a_prompt(
    pki: tuple[Pair, Pair, Pair], tmp_path: Path
) -> None:
    _, leaf, _ = pki
    locked = tmp_path / "locked.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(leaf.key), "-aes256", "-passout", "pass:x"],
        check=True,
        stdout=locked.open("wb"),
    )
    [problem] = _problems(_tls(leaf.cert, locked))
    assert problem.startswith(f"listen.tls.key_file: '{locked}' is encrypted")


def test_min_version_is_12_or_13(pki: tuple[Pair, Pair, Pair]) -> None:
    _, leaf, _ = pki
    [problem] = _problems(_tls(leaf.cert, leaf.key, ", min_version: 1.1"))
    assert problem.startswith("listen.tls.min_version: ")
