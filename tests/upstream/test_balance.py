"""The balancers' choices, directly: shares by weight, least load, keys that stay put."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter

import pytest

from proxy.upstream.balance import HashRing, LeastRequest, SmoothRoundRobin, balancer, key_hash

ALL3 = [True, True, True]


def no_load(_: int) -> int:
    return 0


def test_smooth_round_robin_follows_the_weights_without_bursts() -> None:
    rr = SmoothRoundRobin([5, 1, 1])
    picks = [rr.pick(ALL3) for _ in range(7)]
    assert picks == [0, 0, 1, 0, 2, 0, 0]  # NGINX's a a b a c a a
    assert Counter(rr.pick(ALL3) for _ in range(700)) == {0: 500, 1: 100, 2: 100}


def test_smooth_round_robin_skips_a_target_that_is_out_and_shares_its_part() -> None:
    rr = SmoothRoundRobin([1, 1, 2])
    counts = Counter(rr.pick([True, False, True]) for _ in range(300))
    assert counts == {0: 100, 2: 200}
    # Back in: it gets its share again at once.
    assert Counter(rr.pick(ALL3) for _ in range(400)) == {0: 100, 1: 100, 2: 200}


def test_least_request_idle_targets_share_by_weight() -> None:
    lr = LeastRequest([1, 3], random.Random(7).random)
    counts = Counter(lr.pick([True, True], "", no_load) for _ in range(20000))
    assert counts[1] / 20000 == pytest.approx(0.75, abs=0.02)


def test_least_request_prefers_the_target_with_fewer_in_flight_per_weight() -> None:
    lr = LeastRequest([1, 1, 1], random.Random(3).random)
    loads = {0: 10, 1: 0, 2: 5}
    counts = Counter(lr.pick(ALL3, "", loads.__getitem__) for _ in range(3000))
    # Target 1 wins every draw it is in (2 of 3 pairs), target 0 never wins one.
    assert counts[0] == 0
    assert counts[1] / 3000 == pytest.approx(2 / 3, abs=0.04)
    # By weight: 4 in flight on weight 4 is less busy than 2 on weight 1.
    weighted = LeastRequest([4, 1], random.Random(5).random)
    busy = {0: 4, 1: 2}
    assert {weighted.pick([True, True], "", busy.__getitem__) for _ in range(200)} == {0}


def test_least_request_with_one_usable_target_takes_it() -> None:
    lr = LeastRequest([1, 1, 1], random.Random(1).random)
    assert {lr.pick([False, True, False], "", no_load) for _ in range(50)} == {1}


def test_key_hash_is_stable_across_processes_and_spreads() -> None:
    # Another process, with another hash seed, maps a key alike (workers and instances do).
    code = "from proxy.upstream.balance import key_hash; print(key_hash('/items/1'))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(out.stdout) == key_hash("/items/1")
    tops = Counter(key_hash(f"/items/{i}") >> 30 for i in range(4000))
    assert all(900 < n < 1100 for n in tops.values())


NAMES = ["http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"]
KEYS = [f"/items/{i}?page=2" for i in range(6000)]


def test_the_ring_shares_keys_by_weight() -> None:
    ring = HashRing(NAMES, [1, 1, 2])
    counts = Counter(ring.pick(ALL3, k) for k in KEYS)
    assert counts[0] / len(KEYS) == pytest.approx(0.25, abs=0.05)
    assert counts[1] / len(KEYS) == pytest.approx(0.25, abs=0.05)
    assert counts[2] / len(KEYS) == pytest.approx(0.5, abs=0.05)


def test_a_target_out_of_the_ring_moves_only_its_keys_and_gets_them_back() -> None:
    ring = HashRing(NAMES, [1, 1, 1])
    before = {k: ring.pick(ALL3, k) for k in KEYS}
    during = {k: ring.pick([True, False, True], k) for k in KEYS}
    moved = [k for k in KEYS if before[k] != during[k]]
    assert moved and all(before[k] == 1 for k in moved)  # only target 1's keys moved
    assert len(moved) == sum(1 for v in before.values() if v == 1)
    # Its keys went to both others, not all onto one.
    assert {during[k] for k in moved} == {0, 2}
    assert {k: ring.pick(ALL3, k) for k in KEYS} == before


def test_the_ring_is_placed_by_origin_not_by_place_in_the_list() -> None:
    a = HashRing(NAMES, [1, 1, 1])
    b = HashRing(list(reversed(NAMES)), [1, 1, 1])
    for k in KEYS[:500]:
        assert NAMES[a.pick(ALL3, k)] == list(reversed(NAMES))[b.pick(ALL3, k)]
    # A fourth target takes about a quarter of the keys, from each of the others.
    c = HashRing([*NAMES, "http://10.0.0.4:80"], [1, 1, 1, 1])
    moved = [k for k in KEYS if a.pick(ALL3, k) != c.pick([True] * 4, k)]
    assert all(c.pick([True] * 4, k) == 3 for k in moved)
    assert len(moved) / len(KEYS) == pytest.approx(0.25, abs=0.06)


def test_balancer_by_name() -> None:
    assert isinstance(balancer("round_robin", NAMES, [1, 1, 1]), SmoothRoundRobin)
    assert isinstance(balancer("least_request", NAMES, [1, 1, 1]), LeastRequest)
    assert isinstance(balancer("consistent_hash", NAMES, [1, 1, 1]), HashRing)
