"""A worker of several (`workers: N`): the entry point of its process, which the supervisor
(proxy/server/supervisor.py) starts with `spawn`, and the pipe it talks to the supervisor over.

The worker is a whole ProxyServer bound to the shared proxy port (SO_REUSEPORT), with its admin
API on a private unix socket. It gets the validated Settings through the pipe (command-line
overrides and ${ENV} values are not redone, no secret is written to disk), says READY (or
FAILED and why) once it serves, and takes revocations made while it started (REVOKED). A worker
whose supervisor is gone (its end of the pipe closes) drains and exits rather than serve on
unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from multiprocessing.connection import Connection

import orjson

from proxy.config.loader import Settings
from proxy.edge.revocation import RevocationList
from proxy.server.app import ProxyServer
from proxy.server.eventloop import run as run_loop
from proxy.server.reload import ConfigSource
from proxy.server.shutdown import Shutdown

log = logging.getLogger("cacheproxy.workers")

# The pipe, worker -> supervisor: READY, or FAILED and why, at most MESSAGE_MAX bytes;
# supervisor -> worker: REVOKED and JSON [[member, expiry], ...].
READY = b"ready"
FAILED = b"failed "
MESSAGE_MAX = 4096
REVOKED = b"revoked "
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s (worker {index}): %(message)s"


def worker_main(
    config: Settings,
    index: int,
    admin_path: str,
    log_level: int,
    pipe: Connection,
    source: ConfigSource | None = None,
    revoked: list[tuple[str, float]] | None = None,
) -> None:
    """Entry point of a worker process. `revoked`: the supervisor's revocation list."""
    # Until its loop handles SIGINT (as the supervisor does: stop without the delay), Ctrl-C
    # at a terminal, which reaches the whole process group, must not end it mid-start.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=_LOG_FORMAT.format(index=index))
    raise SystemExit(run_loop(_serve_worker(config, admin_path, pipe, source, revoked, index)))


async def _serve_worker(
    config: Settings,
    admin_path: str,
    pipe: Connection,
    source: ConfigSource | None = None,
    revoked: list[tuple[str, float]] | None = None,
    index: int = 0,
) -> int:
    loop = asyncio.get_running_loop()
    shutdown = Shutdown(config.shutdown_delay)
    loop.add_signal_handler(signal.SIGTERM, shutdown.terminate)
    loop.add_signal_handler(signal.SIGINT, shutdown.interrupt)
    orphaned = False
    revocations: RevocationList | None = None

    def from_supervisor() -> None:
        # It writes revocations made while this worker starts; end of file: it is gone.
        nonlocal orphaned
        try:
            message = pipe.recv_bytes()
        except (EOFError, OSError):
            orphaned = True
            loop.remove_reader(pipe.fileno())
            log.warning("the supervisor is gone: stopping")
            shutdown.interrupt()  # nobody routes by this worker's readiness: no delay
            return
        if revocations is not None and message.startswith(REVOKED):
            revocations.load(orjson.loads(message.removeprefix(REVOKED)))

    loop.add_reader(pipe.fileno(), from_supervisor)
    try:
        server = ProxyServer(
            config,
            reuse_port=True,
            admin_path=admin_path,
            source=source,
            shutdown=shutdown,
            report_start=index == 0,  # one worker says what was loaded, not each of them
        )
        revocations = server.revocations
        revocations.load(revoked or ())  # before the port is bound: nothing served without it
        # Before "ready": the supervisor only signals workers that are serving.
        loop.add_signal_handler(signal.SIGHUP, server.reload)
        await server.start()
    except Exception as exc:
        if not isinstance(exc, OSError):
            log.exception("cannot start")
        _tell(pipe, FAILED + str(exc).encode(errors="replace"))
        return 1
    _tell(pipe, READY)
    await shutdown.until_close()
    log.info("draining in-flight requests (up to %.0fs)", config.shutdown_grace)
    await server.stop()
    if orphaned:  # a supervisor killed outright could not tidy up: the last worker out does
        directory = os.path.dirname(admin_path)
        with contextlib.suppress(OSError):
            os.unlink(admin_path)
            if not any(name.endswith(".sock") for name in os.listdir(directory)):
                shutil.rmtree(directory)  # its metrics files with it
    return 0


def _tell(pipe: Connection, message: bytes) -> None:
    with contextlib.suppress(OSError):  # the supervisor is gone: supervisor_gone() says so
        pipe.send_bytes(message[:MESSAGE_MAX])
