"""`upstream.dns` and `upstream.tls` as loaded: defaults, and every mistake refused at load
with its key path, TLS files included (read with OpenSSL, as the first connection would)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config.connect import nameserver
from proxy.config.loader import ConfigError, parse_config
from tests.tls_certs import make_ca, make_cert


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    return info.value.problems


def upstream(**keys: object) -> str:
    inner = ", ".join(f"{k}: {v}" for k, v in keys.items())
    return f"upstream: {{url: https://api.test, {inner}}}"


def test_defaults_keep_answers_within_bounds_and_trust_the_system_store() -> None:
    config = parse_config("upstream: {url: https://api.test}", env={}).upstream
    dns, tls = config.dns, config.tls
    assert (dns.min_ttl, dns.max_ttl, dns.negative_ttl, dns.nameservers) == (5, 60, 5, ())
    assert (tls.ca_file, tls.cert_file, tls.key_file, tls.server_name) == (None,) * 4
    assert tls.insecure_skip_verify is False


@pytest.mark.parametrize(
    ("written", "taken"),
    [
        ("10.0.0.2", "10.0.0.2:53"),
        ("10.0.0.2:5353", "10.0.0.2:5353"),
        ("::1", "[::1]:53"),
        ("[fd00::2]:5353", "[fd00::2]:5353"),
    ],
)
def test_name_servers_are_ip_addresses_with_an_optional_port(written: str, taken: str) -> None:
    assert nameserver(written) == taken


def test_dns_mistakes_are_refused_with_their_key_paths() -> None:
    assert problems(upstream(dns="{nameservers: [dns.example]}")) == [
        "upstream.dns.nameservers: not a name server address: 'dns.example' (an IP address, "
        "optionally with a port: 10.0.0.2, 10.0.0.2:5353, [fd00::2]:53)"
    ]
    assert problems(upstream(dns="{nameservers: ['10.0.0.2:99999']}")) == [
        "upstream.dns.nameservers: not a port: 99999 in '10.0.0.2:99999'"
    ]
    assert problems(upstream(dns="{min_ttl: 2m}")) == [
        "upstream.dns: min_ttl (120) is above max_ttl (60)"
    ]
    found = problems(upstream(dns="{max_ttl: 0, negative_ttl: -1}"))
    assert [p.split(":")[0] for p in found] == ["upstream.dns.max_ttl", "upstream.dns.negative_ttl"]


def test_name_servers_need_the_dns_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on an install without aiodns: getaddrinfo cannot be pointed at a name server.
    monkeypatch.setattr("proxy.config.connect.has_dns_extra", lambda: False)
    assert problems(upstream(dns="{nameservers: [10.0.0.2]}")) == [
        "upstream.dns.nameservers: needs the dns extra (aiodns), not installed: "
        "pip install 'cacheproxy[dns]'"
    ]
    assert parse_config("upstream: {url: http://a}", env={}).upstream.dns.nameservers == ()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tls")
    ca = make_ca(d)
    client, other = make_cert(d, ca, ("client",), usage="clientAuth"), make_cert(d, ca)
    junk = d / "junk.pem"
    junk.write_text("not a certificate")
    encrypted = d / "encrypted.key"
    encrypt = ["openssl", "pkey", "-in", str(client.key), "-aes256", "-passout", "pass:x"]
    subprocess.run([*encrypt, "-out", str(encrypted)], check=True, capture_output=True)
    both = d / "both.pem"  # the certificate with its key, in one file
    both.write_text(client.cert.read_text() + client.key.read_text())
    return {
        "ca": ca.cert,
        "cert": client.cert,
        "key": client.key,
        "other_key": other.key,
        "junk": junk,
        "encrypted": encrypted,
        "both": both,
    }


def test_tls_files_that_load_are_taken(files: dict[str, Path]) -> None:
    tls = parse_config(
        upstream(tls=f"{{ca_file: {files['ca']}, cert_file: {files['cert']}, "
                 f"key_file: {files['key']}, server_name: API.Internal}}"),
        env={},
    ).upstream.tls  # fmt: skip
    assert (tls.ca_file, tls.server_name) == (str(files["ca"]), "api.internal")
    both = parse_config(upstream(tls=f"{{cert_file: {files['both']}}}"), env={}).upstream.tls
    assert both.key_file is None  # the key is in cert_file


def test_tls_files_that_would_fail_the_first_connection_are_refused_at_load(
    files: dict[str, Path],
) -> None:
    assert problems(upstream(tls="{ca_file: /nonexistent/ca.pem, cert_file: /nonexistent/c}")) == [
        "upstream.tls.ca_file: cannot read '/nonexistent/ca.pem': No such file or directory",
        "upstream.tls.cert_file: cannot read '/nonexistent/c': No such file or directory",
    ]
    assert problems(upstream(tls=f"{{ca_file: {files['junk']}}}")) == [
        f"upstream.tls: ca_file '{files['junk']}' holds no PEM certificate: "
        "no certificate or crl found"
    ]
    cert = files["cert"]
    assert problems(upstream(tls=f"{{cert_file: {cert}, key_file: {files['other_key']}}}")) == [
        f"upstream.tls: cert_file '{cert}' with key_file '{files['other_key']}': "
        "the key is not this certificate's"
    ]
    unreadable = "no private key it can read (PEM, not encrypted)"
    assert problems(upstream(tls=f"{{cert_file: {cert}, key_file: {files['encrypted']}}}")) == [
        f"upstream.tls: cert_file '{cert}' with key_file '{files['encrypted']}': {unreadable}"
    ]
    assert problems(upstream(tls=f"{{cert_file: {cert}}}")) == [
        f"upstream.tls: cert_file '{cert}' with its key in it: {unreadable}"
    ]


def test_tls_settings_that_contradict_are_refused(files: dict[str, Path]) -> None:
    assert problems(upstream(tls=f"{{key_file: {files['key']}}}")) == [
        "upstream.tls: key_file is set without cert_file"
    ]
    assert problems(upstream(tls=f"{{ca_file: {files['ca']}, insecure_skip_verify: true}}")) == [
        "upstream.tls: ca_file is never read with insecure_skip_verify: drop one of them"
    ]
    assert problems(upstream(tls="{server_name: 'not a name'}")) == [
        "upstream.tls.server_name: not a host name: 'not a name'"
    ]


def test_a_bad_tls_file_makes_check_config_exit_non_zero(
    files: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(upstream(tls=f"{{ca_file: {files['junk']}}}") + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "upstream.tls: ca_file" in done.stderr
