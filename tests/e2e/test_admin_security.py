"""The admin listener against hostile or careless input: raw bytes on a real socket."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, Origin, StartProxy, free_port, raw_exchange

TOKEN = "s3cret-tøken"  # non-ASCII on purpose: the comparison is on UTF-8 bytes


def _request(authorization: bytes | None) -> bytes:
    auth = b"Authorization: " + authorization + b"\r\n" if authorization is not None else b""
    return b"GET /cache/stats HTTP/1.1\r\nHost: admin\r\n" + auth + b"Connection: close\r\n\r\n"


def _split(response: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer \xff\xfe",  # not UTF-8 at all
        b"Bearer " + TOKEN.encode() + b"\xff",  # the right token with a stray byte after it
        b"Bearer " + TOKEN.encode("latin-1", "replace"),  # the right text, wrong encoding
        b"\xc3(",  # a truncated UTF-8 sequence, no scheme
    ],
)
async def test_an_authorization_header_that_is_not_utf8_gets_a_clean_401(
    origin: Origin,
    start_proxy: StartProxy,
    caplog: pytest.LogCaptureFixture,
    authorization: bytes,
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": TOKEN})
    with caplog.at_level(logging.DEBUG):
        status, head, body = _split(await raw_exchange(proxy.admin_port, _request(authorization)))
    assert status == 401, head + body
    assert orjson.loads(body) == {"error": "unauthorized", "message": "admin token required"}
    assert b'WWW-Authenticate: Bearer realm="cacheproxy-admin"' in head
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback logged
    assert TOKEN not in caplog.text


async def test_the_right_token_in_utf8_is_accepted_and_a_wrong_one_is_not(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": TOKEN})
    right = b"Bearer " + TOKEN.encode()
    status, head, body = _split(await raw_exchange(proxy.admin_port, _request(right)))
    assert status == 200, head + body
    assert "entries" in orjson.loads(body)
    for wrong in (None, b"", b"Bearer", b"Bearer " + TOKEN.encode()[:-1], b"Basic " + right):
        status, head, _ = _split(await raw_exchange(proxy.admin_port, _request(wrong)))
        assert status == 401, (wrong, head)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_the_cli_refuses_an_open_admin_listener_without_a_token(
    tmp_path: Path, command: str
) -> None:
    cfg = tmp_path / "open-admin.yaml"
    cfg.write_text(
        f"upstream: {{url: 'http://127.0.0.1:{free_port()}'}}\n"
        f"listen: {{port: {free_port()}}}\nadmin: {{host: 0.0.0.0, port: {free_port()}}}\n"
    )
    done = _cli(command, "--config", str(cfg))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "admin.host: " in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_the_cli_does_not_print_a_token_that_landed_in_the_wrong_key(
    tmp_path: Path, command: str
) -> None:
    cfg = tmp_path / "swapped.yaml"
    cfg.write_text("upstream: {url: 'http://127.0.0.1:9'}\nadmin: {port: '${ADMIN_TOKEN}'}\n")
    done = _cli(command, "--config", str(cfg), env={"ADMIN_TOKEN": TOKEN})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "admin.port: " in done.stderr and "${ADMIN_TOKEN}" in done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_check_config_does_not_print_the_upstream_password(tmp_path: Path) -> None:
    cfg = tmp_path / "secret-upstream.yaml"
    cfg.write_text("upstream: {url: 'http://api:s3cr3t-pw@127.0.0.1:9'}\n")
    done = _cli("check-config", "--config", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "http://api:***@127.0.0.1:9" in done.stdout
    assert "s3cr3t-pw" not in done.stdout + done.stderr
