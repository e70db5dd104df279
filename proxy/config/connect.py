"""How connections to the upstream are opened: `upstream.dns` (how long answers are kept, which
servers are asked) and `upstream.tls` (whom to trust, which certificate to show).

The behaviour is proxy/upstream/connect.py's and resolve.py's. The TLS files are read here, at
load, with the `ssl` module: a missing, unreadable or mismatched file stops the proxy before it
starts, named by its key, rather than failing every request to the upstream later.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import ssl
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from proxy.config.durations import Duration
from proxy.config.hosts import host_name
from proxy.config.section import Model

# `[v6]:port` or `v4:port`; anything else is an address without a port (or not one at all).
_SERVER = re.compile(
    r"\[(?P<v6>[^\]]+)\]:(?P<port6>[0-9]{1,5})|(?P<v4>[0-9.]+):(?P<port4>[0-9]{1,5})"
)


def nameserver(value: str) -> str:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353`, as c-ares takes it (`ip:port`)."""
    text = value.strip()
    m = _SERVER.fullmatch(text)
    address, port = text, "53"
    if m is not None:
        address = m.group("v6") or m.group("v4")
        port = m.group("port6") or m.group("port4")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(
            f"not a name server address: {value!r} (an IP address, optionally with "
            "a port: 10.0.0.2, 10.0.0.2:5353, [fd00::2]:53)"
        ) from None
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"not a port: {port} in {value!r}")
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def has_dns_extra() -> bool:
    """Whether aiodns (the `dns` extra) is installed: found, not imported."""
    return importlib.util.find_spec("aiodns") is not None


class Dns(Model):
    min_ttl: Duration = Field(
        5.0,
        ge=0,
        description="Seconds an answer is kept at least, whatever its TTL says: a TTL of 0 "
        "would ask the name servers for every new connection.",
        examples=[5, "1s"],
    )
    max_ttl: Duration = Field(
        60.0,
        gt=0,
        description="Seconds an answer is kept at most before the host is looked up again, "
        "however long its TTL (a caching resolver on the way, c-ares's own included, still "
        "answers from its cache until the record's TTL is out). Without the `dns` extra TTLs "
        "are unknown and every answer is kept this long.",
        examples=[60, "5m"],
    )
    negative_ttl: Duration = Field(
        5.0,
        gt=0,
        description="Seconds a failed lookup is remembered: a name that does not resolve is "
        "answered 502 at once meanwhile, without asking again; a name that resolved before "
        "keeps its last addresses and is asked again after this.",
        examples=[5, "30s"],
    )
    nameservers: tuple[str, ...] = Field(
        (),
        description="Name servers asked instead of /etc/resolv.conf's, each an IP address "
        "with an optional port. Needs the `dns` extra. Empty: the system's.",
        examples=[["10.0.0.2", "[fd00::2]:53", "127.0.0.1:5353"]],
    )

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        servers = tuple(nameserver(v) for v in value)
        if servers and not has_dns_extra():
            raise ValueError(
                "needs the dns extra (aiodns), not installed: pip install 'cacheproxy[dns]'"
            )
        return servers

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> Dns:
        if self.min_ttl > self.max_ttl:
            raise ValueError(f"min_ttl ({self.min_ttl:g}) is above max_ttl ({self.max_ttl:g})")
        return self


def _chain_problem(exc: ssl.SSLError) -> str:
    """Why load_cert_chain refused, as an operator can act on it (not "PEM lib (_ssl.c:3926)")."""
    reason = exc.reason or ""
    if reason == "KEY_VALUES_MISMATCH":
        return "the key is not this certificate's"
    if reason in ("", "PEM_LIB"):  # what load_cert_chain says of a key it cannot read
        return "no private key it can read (PEM, not encrypted)"
    return reason.lower().replace("_", " ")


def _readable(value: str | None) -> str | None:
    if value is not None:
        try:
            with Path(value).open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {value!r}: {exc.strerror}") from None
    return value


class UpstreamTls(Model):
    ca_file: str | None = Field(
        None,
        description="PEM file of the certificates (CAs) trusted to sign the upstream's, "
        "instead of the system's store (and SSL_CERT_FILE); a private CA, or a pinned "
        "self-signed certificate. None: the system's store.",
        examples=["/etc/cacheproxy/upstream-ca.pem"],
    )
    cert_file: str | None = Field(
        None,
        description="PEM file of the client certificate shown to upstreams that ask for one "
        "(mutual TLS), with its chain; with key_file, or holding the key too.",
        examples=["/etc/cacheproxy/client.pem"],
    )
    key_file: str | None = Field(
        None,
        description="PEM file of cert_file's private key, not encrypted. None: in cert_file.",
        examples=["/etc/cacheproxy/client.key"],
    )
    server_name: str | None = Field(
        None,
        description="The name sent in SNI and checked against the upstream's certificate, "
        "where it is not the URL's host (an upstream reached by IP address, say). Applies to "
        "every https upstream. None: the URL's host.",
        examples=["api.internal"],
    )
    insecure_skip_verify: bool = Field(
        False,
        description="`true`: the upstream's certificate is not checked at all, so anyone on "
        "the path can read and change the traffic. Logged as a warning at every start; for a "
        "test bench, never production (trust a private CA with ca_file instead).",
    )

    _files = field_validator("ca_file", "cert_file", "key_file")(_readable)

    @field_validator("server_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None:
            name = host_name(value)
            if name is None or name.startswith("["):
                raise ValueError(f"not a host name: {value!r}")
            return name
        return value

    @model_validator(mode="after")
    def _loadable(self) -> UpstreamTls:
        """What OpenSSL would refuse when the first connection is made, refused now."""
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set without cert_file")
        if self.insecure_skip_verify and self.ca_file is not None:
            raise ValueError("ca_file is never read with insecure_skip_verify: drop one of them")
        if self.ca_file is None and self.cert_file is None:
            return self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"ca_file {self.ca_file!r} holds no PEM certificate: "
                    f"{(exc.reason or 'unreadable').lower().replace('_', ' ')}"
                ) from None
        if self.cert_file is not None:
            try:
                # A password, so that OpenSSL never prompts on the terminal for an encrypted key.
                context.load_cert_chain(self.cert_file, self.key_file, password=b"")
            except ssl.SSLError as exc:
                key = f"key_file {self.key_file!r}" if self.key_file else "its key in it"
                raise ValueError(
                    f"cert_file {self.cert_file!r} with {key}: {_chain_problem(exc)}"
                ) from None
        return self


__all__ = ["Dns", "UpstreamTls", "has_dns_extra", "nameserver"]
