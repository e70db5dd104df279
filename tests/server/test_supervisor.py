"""The supervisor's pure decisions (proxy/server/supervisor.py, processes.py)."""

from __future__ import annotations

import signal

from proxy.server.processes import describe_exit
from proxy.server.supervisor import RESTART_MAX, restart_delay


def test_restart_delays_grow_and_are_bounded() -> None:
    delays = [restart_delay(n) for n in range(1, 12)]
    assert delays[0] == 0.5 and delays == sorted(delays) and delays[-1] == RESTART_MAX
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"
