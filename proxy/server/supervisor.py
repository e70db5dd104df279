"""`workers: N`: N processes share the proxy port; a supervisor runs them and owns the admin port.

Each worker is a whole proxy (its own memory tier; the Redis tier, when configured, is what
they share) bound to the proxy port with SO_REUSEPORT, so the kernel spreads connections
across them. The supervisor serves no proxy traffic and needs no Redis:

- it checks that the proxy port is free before starting workers: with SO_REUSEPORT, another
  instance run by the same user could otherwise bind it too and silently take a share of it;
- it serves the admin port: `GET /workers` itself, anything else by asking every worker on its
  private unix socket (in a 0700 directory) and merging the responses (proxy/admin/merge.py);
- a worker that dies is restarted, after a delay that grows while it keeps dying young; a
  worker that cannot start at start-up stops the whole run, with its reason and exit code 1;
- SIGTERM makes its `/readyz` 503 at once and is passed on to every worker, which serves on
  for shutdown_delay, then drains for shutdown_grace (proxy/server/shutdown.py); SIGINT is passed
  on as SIGINT, which skips the delay. A worker still running STOP_MARGIN seconds past
  both is killed;
- SIGHUP (or `POST /config/reload`) reloads the config: the supervisor re-reads the file for
  the workers it will (re)start, and every serving worker re-reads it itself
  (proxy/server/reload.py);
- it keeps a copy of the revocations made through it and hands it to every worker it starts,
  before that worker serves; one made while a worker starts is sent down its pipe (a
  restarted worker would otherwise accept every token revoked before, without Redis).

Workers are started with `spawn` (a fresh interpreter, not a fork of a process running an
event loop): proxy/server/worker.py is what runs in them, proxy/server/processes.py tracks them
here, and proxy/admin/fanout.py is the admin port, over this supervisor's SupervisorView.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy import __version__
from proxy.adapters.aiohttp_internals import set_server_field
from proxy.admin.app import LIVE_PATH
from proxy.admin.fanout import build_fanout_admin
from proxy.admin.merge import MissingResponse, WorkerResponse
from proxy.admin.revocation import parse_revocation
from proxy.admin.view import SupervisorView
from proxy.config.loader import ConfigError, Settings, redact_urls, with_overrides
from proxy.edge.revocation import RevocationList
from proxy.http.headers import HOP_BY_HOP
from proxy.observe.metrics import MULTIPROC_ENV, worker_exited
from proxy.server.processes import Slot, WorkerProcess, describe_exit
from proxy.server.reload import ConfigSource, effective
from proxy.server.shutdown import Shutdown
from proxy.server.worker import REVOKED, worker_main

log = logging.getLogger("cacheproxy.workers")

RESPONSE_TIMEOUT = 2.0  # seconds a worker gets to respond to an admin request, plus REDIS_CALLS
REDIS_CALLS = 4  # ...times redis.timeout with Redis: a purge makes a few calls in a row
RESPONSE_MAX = 16 * 1024 * 1024  # bytes of one worker's admin response, at most
START_TIMEOUT = 30.0  # seconds a worker gets to bind its sockets and say it is ready
STOP_MARGIN = 5.0  # seconds past shutdown_grace before a worker still draining is killed
RESTART_FIRST = 0.5  # seconds before restarting a worker that died...
RESTART_MAX = 30.0  # ...doubling while it keeps dying young, up to this
STABLE_AFTER = 10.0  # seconds of life after which a death no longer counts as dying young
# A worker whose event loop hangs still holds its share of the port (SO_REUSEPORT hands it
# new connections) and never dies by itself: each serving worker is pinged every
# HEARTBEAT_EVERY seconds, and killed (then restarted) after HEARTBEAT_MISSES silent pings
# in a row, each given RESPONSE_TIMEOUT: 12 s or more of a loop that responds to nothing.
HEARTBEAT_EVERY = 2.0
HEARTBEAT_MISSES = 4
# Not passed on from a worker's response: per hop, or set again by the admin port.
_RESPONSE_DROP = HOP_BY_HOP | {
    "content-length",
    "content-type",
    "content-encoding",
    "date",
    "server",
}


class CannotStart(Exception):
    """A worker could not start at start-up (port taken, ...): the run ends with exit code 1."""


def restart_delay(failures: int) -> float:
    """Seconds before restarting a worker that has died young `failures` times in a row."""
    return min(RESTART_MAX, RESTART_FIRST * 2 ** max(failures - 1, 0))


async def probe_port(host: str, port: int) -> int:
    """Bind the proxy port the way a lone process would (no SO_REUSEPORT), then let it go.

    It fails if anything listens there, SO_REUSEPORT or not; port 0 gets a free port, which
    the workers then share.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        asyncio.Protocol, host, port, reuse_address=True, start_serving=False
    )
    try:
        return int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


class Supervisor:
    def __init__(self, config: Settings, source: ConfigSource | None = None) -> None:
        self.config = config
        self.source = source
        set_server_field(config.listen.server_header or None)  # the admin port's responses
        self._context = multiprocessing.get_context("spawn")
        self._stop = asyncio.Event()
        self.shutdown = Shutdown(config.shutdown_delay)
        self._started = False  # every worker was ready once
        self._told: list[WorkerProcess] = []  # workers signalled to stop
        self.slots: list[Slot] = []
        self._keepers: list[asyncio.Task[None]] = []
        self._admin: web.AppRunner | None = None
        self._socket_dir: str | None = None
        self.metrics_dir: str | None = None
        redis = config.redis
        self.response_timeout = RESPONSE_TIMEOUT + (REDIS_CALLS * redis.timeout if redis else 0.0)
        # Revocations made through this supervisor, for the workers it starts from now on.
        self.revocations = RevocationList(config.revocation)

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT; raises CannotStart (or OSError) if it cannot start."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._terminate)
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        try:
            await self._start()
            await self._stop.wait()
        finally:
            await self._close()

    async def _start(self) -> None:
        listen, admin = self.config.listen, self.config.admin
        port = await probe_port(listen.host, listen.port)
        if port != listen.port:
            self.config = with_overrides(self.config, port=port)
            if self.source is not None:  # a reload must not see `port: 0` as a change
                self.source = dataclasses.replace(self.source, port=port)
        self._admin = web.AppRunner(build_fanout_admin(self.admin_view()), access_log=None)
        await self._admin.setup()
        await web.TCPSite(self._admin, admin.host, admin.port, reuse_address=True).start()
        self._socket_dir = tempfile.mkdtemp(prefix="cacheproxy-")  # mode 0700
        # Workers write their metrics here; /metrics is read from it (spawned workers inherit
        # the environment as it is now).
        self.metrics_dir = os.path.join(self._socket_dir, "metrics")
        os.mkdir(self.metrics_dir, 0o700)
        os.environ[MULTIPROC_ENV] = self.metrics_dir
        for index in range(self.config.workers):
            path = os.path.join(self._socket_dir, f"worker-{index}.sock")
            session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path, force_close=True))
            self.slots.append(Slot(index, path, session))
        for slot in self.slots:
            self._spawn(slot)
        if not await self._all_ready():
            return  # told to stop while starting
        self._started = True
        self._keepers = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
        self._keepers.append(asyncio.create_task(self._heartbeat()))
        admin_port = self._admin.addresses[0][1]
        log.info(
            "cacheproxy %s listening on %s://%s:%d -> %s with %d workers (admin http://%s:%d)",
            __version__,
            "https" if listen.tls is not None else "http",
            listen.host,
            port,
            redact_urls(self.config.upstream.urls),
            len(self.slots),
            admin.host,
            admin_port,
        )

    def readiness(self) -> str:
        """`/readyz`'s word: ready once every worker has started, while one serves and the
        supervisor is not stopping. Never the upstream's health (proxy/observe/health.py)."""
        if self.shutdown.draining:
            return "draining"
        if not self._started:
            return "starting"
        if not any(s.current is not None and s.current.serving for s in self.slots):
            return "no_workers"
        return "ready"

    def _terminate(self) -> None:
        self.shutdown.terminate()
        self._stop.set()

    def _interrupt(self) -> None:
        self.shutdown.interrupt()
        self._stop.set()
        for worker in self._told:  # told to leave after the delay: now, rather
            worker.signal(signal.SIGINT)

    def reload_own(self) -> None:
        """Re-read the file for workers started from now on; the running ones reload themselves."""
        if self.source is None:
            return
        try:
            loaded = self.source.load()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload refused, old config kept: %s: %s", exc.source, problem)
            return
        self.config = effective(self.config, loaded)

    def _sighup(self) -> None:
        self.reload_own()
        for slot in self.slots:
            worker = slot.current
            # One still starting has no SIGHUP handler yet (the signal would kill it).
            if worker is not None and worker.serving and worker.pid is not None:
                os.kill(worker.pid, signal.SIGHUP)

    def _spawn(self, slot: Slot) -> None:
        ours, theirs = self._context.Pipe()
        level = logging.getLogger().level
        revoked = self.revocations.entries()
        process = self._context.Process(
            target=worker_main,
            args=(self.config, slot.index, slot.admin_path, level, theirs, self.source, revoked),
            name=f"cacheproxy-worker-{slot.index}",
            daemon=True,  # should the supervisor fail, multiprocessing's exit handler stops it
        )
        process.start()
        theirs.close()
        slot.current = WorkerProcess(process, ours)

    async def note_revocation(self, body: bytes) -> None:
        """Keep a revocation for workers started later, and send it to those starting now
        (the serving ones get the request itself)."""
        parsed = parse_revocation(body)
        if isinstance(parsed, str):
            return  # the workers respond with what is wrong with it
        expiry = await self.revocations.revoke(*parsed)
        if expiry is None:
            return  # the list is full, and so is every worker's: they respond 507
        message = REVOKED + orjson.dumps([[parsed[0], expiry]])
        for slot in self.slots:
            worker = slot.current
            if worker is not None and not worker.serving and not worker.exited.done():
                worker.tell(message)

    async def _all_ready(self) -> bool:
        """True once every worker serves; False if told to stop first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            for slot in self.slots:
                assert slot.current is not None
                ready = slot.current.ready
                either: set[asyncio.Future[Any]] = {ready, stopping}
                await asyncio.wait(
                    either,
                    timeout=max(deadline - loop.time(), 0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stopping.done():
                    return False
                if not ready.done():
                    raise CannotStart(
                        f"worker {slot.index} did not start within {START_TIMEOUT:g} s"
                    )
                if (why := ready.result()) is not None:
                    raise CannotStart(f"worker {slot.index}: {why}")
            return True
        finally:
            stopping.cancel()

    async def _keep(self, slot: Slot) -> None:
        """Restart the slot's worker each time it dies, until the supervisor stops."""
        while True:
            worker = slot.current
            assert worker is not None
            code = await worker.exited
            if worker.pid is not None and self.metrics_dir is not None:
                worker_exited(worker.pid, self.metrics_dir)  # its gauges no longer count
            if self._stop.is_set():
                return
            lived = asyncio.get_running_loop().time() - worker.started
            slot.failures = 1 if lived >= STABLE_AFTER else slot.failures + 1
            delay = restart_delay(slot.failures)
            log.warning(
                "worker %d (pid %s) %s after %.1f s; restarting it in %.1f s",
                slot.index,
                worker.pid,
                describe_exit(code),
                lived,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            slot.restarts += 1
            self._spawn(slot)
            await self._watch_start(slot)

    async def _heartbeat(self) -> None:
        """Kill a worker whose loop has stopped responding; `_keep` restarts it."""
        misses: dict[int, int] = {}  # pid -> silent pings in a row
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), HEARTBEAT_EVERY)
            if self._stop.is_set():
                return
            serving = [s for s in self.slots if s.current is not None and s.current.serving]
            responses = await asyncio.gather(
                *(self.ask(s, "GET", LIVE_PATH, CIMultiDict(), b"") for s in serving)
            )
            for slot, response in zip(serving, responses, strict=True):
                worker = slot.current
                assert worker is not None and worker.pid is not None
                if isinstance(response, WorkerResponse) or not worker.serving:
                    misses.pop(worker.pid, None)
                    continue
                misses[worker.pid] = missed = misses.get(worker.pid, 0) + 1
                if missed >= HEARTBEAT_MISSES:
                    log.error(
                        "worker %d (pid %s) responded to none of %d heartbeats (%s): killing it",
                        slot.index,
                        worker.pid,
                        missed,
                        response.reason,
                    )
                    misses.pop(worker.pid)
                    worker.process.kill()

    async def _watch_start(self, slot: Slot) -> None:
        worker = slot.current
        assert worker is not None
        try:
            why = await asyncio.wait_for(asyncio.shield(worker.ready), START_TIMEOUT)
        except TimeoutError:
            why = f"did not start within {START_TIMEOUT:g} s"
            worker.process.kill()
        if why is None:
            log.info("worker %d restarted (pid %s)", slot.index, worker.pid)
        else:
            log.error("worker %d (pid %s) could not start: %s", slot.index, worker.pid, why)

    async def _close(self) -> None:
        if not self.shutdown.draining:  # a failed start, not a signal: nobody to wait for
            self.shutdown.interrupt()
        self._stop.set()
        await self._stop_workers()
        for task in self._keepers:
            task.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        if self._admin is not None:
            await self._admin.cleanup()
        for slot in self.slots:
            await slot.session.close()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def _stop_workers(self) -> None:
        running = [
            s.current for s in self.slots if s.current is not None and not s.current.exited.done()
        ]
        if not running:
            return
        delay = 0.0 if self.shutdown.skips_delay else self.shutdown.delay
        grace = self.config.shutdown_grace
        log.info(
            "stopping %d worker(s): serving %.0fs more, then in-flight requests get up to %.0fs",
            len(running),
            delay,
            grace,
        )
        # SIGTERM: serve on for the delay, then drain; SIGINT: drain now (proxy/server/shutdown.py).
        sig = signal.SIGINT if self.shutdown.skips_delay else signal.SIGTERM
        self._told = running
        for worker in running:
            worker.signal(sig)
        _, late = await asyncio.wait(
            [w.exited for w in running], timeout=delay + grace + STOP_MARGIN
        )
        for worker in running:
            if not worker.exited.done():
                log.warning("worker pid %s still running after the grace: killing it", worker.pid)
                worker.process.kill()
        if late:
            await asyncio.wait(late, timeout=STOP_MARGIN)

    # --- admin requests ------------------------------------------------------------------

    def admin_view(self) -> SupervisorView:
        """All the admin port may touch of this supervisor."""

        def metrics_dir() -> str:
            assert self.metrics_dir is not None  # made before any worker can write there
            return self.metrics_dir

        return SupervisorView(
            token=self.config.admin.token,
            workers=lambda: [s.describe() for s in self.slots],
            ask_all=self.ask_all,
            readiness=self.readiness,
            reload=self.reload_own,
            note_revocation=self.note_revocation,
            metrics_dir=metrics_dir,
        )

    async def ask_all(
        self, method: str, path: str, headers: CIMultiDict[str], body: bytes
    ) -> list[WorkerResponse | MissingResponse]:
        """Every worker's response to an admin request, or why there is none, in worker order."""
        return await asyncio.gather(
            *(self.ask(slot, method, path, headers, body) for slot in self.slots)
        )

    async def ask(
        self, slot: Slot, method: str, path: str, headers: CIMultiDict[str], body: bytes
    ) -> WorkerResponse | MissingResponse:
        """One worker's response to an admin request, or why there is none (bounded in time)."""
        worker = slot.current
        pid = worker.pid if worker is not None else None
        if worker is None or not worker.serving:
            return MissingResponse(slot.index, pid, slot.why_not_serving())
        url = URL(f"http://worker{path}", encoded=True)  # the path as the client sent it
        try:
            async with asyncio.timeout(self.response_timeout):
                async with slot.session.request(
                    method, url, headers=headers, data=body or None, allow_redirects=False
                ) as resp:
                    data = bytearray()
                    async for chunk in resp.content.iter_any():
                        data += chunk
                        if len(data) > RESPONSE_MAX:
                            return MissingResponse(slot.index, pid, "answer over 16 MiB")
        except TimeoutError:
            return MissingResponse(slot.index, pid, f"no answer within {self.response_timeout:g} s")
        except aiohttp.ClientError as exc:
            return MissingResponse(slot.index, pid, f"{type(exc).__name__}: {exc}")
        kept = CIMultiDict(
            (k, v) for k, v in resp.headers.items() if k.lower() not in _RESPONSE_DROP
        )
        return WorkerResponse(resp.status, resp.headers.get("Content-Type", ""), bytes(data), kept)
