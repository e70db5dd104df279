"""The supervisor's view of its worker processes: each started one (WorkerProcess: ready and
exited as futures, read from its pipe and its process sentinel on the event loop) and each
worker number across its restarts (Slot)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import aiohttp

from proxy.server.worker import FAILED, MESSAGE_MAX, READY


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class WorkerProcess:
    """One started worker process: when it is ready, and when it ends, as futures."""

    def __init__(self, process: BaseProcess, pipe: Connection) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self.process = process
        self.pid = process.pid
        self.started = loop.time()
        self.started_at = time.time()
        self._pipe = pipe
        # None once it is serving; otherwise why it could not start.
        self.ready: asyncio.Future[str | None] = loop.create_future()
        self.exited: asyncio.Future[int | None] = loop.create_future()
        self._listening = True
        loop.add_reader(pipe.fileno(), self._on_message)
        loop.add_reader(process.sentinel, self._on_exit)

    def signal(self, sig: signal.Signals) -> None:
        if self.pid is not None and not self.exited.done():  # not reaped: the pid is still its
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    @property
    def serving(self) -> bool:
        return self.ready.done() and self.ready.result() is None and not self.exited.done()

    def tell(self, message: bytes) -> None:
        """Send the worker a message (small: a pipe's buffer holds many)."""
        with contextlib.suppress(OSError):  # it has died: _on_exit says so
            self._pipe.send_bytes(message)

    def _stop_listening(self) -> None:
        if self._listening:
            self._listening = False
            self._loop.remove_reader(self._pipe.fileno())

    def _on_message(self) -> None:
        self._stop_listening()
        try:
            message = self._pipe.recv_bytes(MESSAGE_MAX)
        except (EOFError, OSError):
            return  # it ended without a word: _on_exit says how
        if not self.ready.done():
            reason = message.removeprefix(FAILED).decode(errors="replace")
            self.ready.set_result(None if message == READY else reason)

    def _on_exit(self) -> None:
        self._loop.remove_reader(self.process.sentinel)
        self._stop_listening()
        self.process.join()  # it has ended: this only reaps it
        code = self.process.exitcode
        if not self.ready.done():
            self.ready.set_result(f"{describe_exit(code)} before it was ready")
        self._pipe.close()
        self.exited.set_result(code)


@dataclass
class Slot:
    """Worker number `index`, across its restarts."""

    index: int
    admin_path: str
    session: aiohttp.ClientSession  # to its admin socket
    current: WorkerProcess | None = None
    restarts: int = 0
    failures: int = 0  # deaths in a row, each before STABLE_AFTER seconds of life

    def why_not_serving(self) -> str:
        worker = self.current
        if worker is None:
            return "not started"
        if worker.exited.done():
            return f"{describe_exit(worker.exited.result())}; restarting"
        return "starting"

    def describe(self) -> dict[str, object]:
        worker = self.current
        return {
            "worker": self.index,
            "pid": worker.pid if worker else None,
            "alive": worker is not None and not worker.exited.done(),
            "ready": worker is not None and worker.serving,
            "restarts": self.restarts,
            "started_at": (
                datetime.fromtimestamp(worker.started_at, UTC).isoformat(timespec="seconds")
                if worker
                else None
            ),
            "admin_socket": self.admin_path,  # for asking this worker alone
        }
