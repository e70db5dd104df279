"""Which of an upstream's targets gets a request: pure choices over weights, loads and keys.

Each balancer picks among the targets `usable[i]` allows (the caller leaves out ejected,
unhealthy or already tried ones, and allows them all when too many are out: panic mode):

- `SmoothRoundRobin`: NGINX's smooth weighted round robin. Weights 5, 1, 1 give
  a a b a c a a, not a a a a a b c: no target gets a burst.
- `LeastRequest`: Envoy's power of two choices, weighted. Two targets drawn by weight, the
  one with fewer requests in flight per weight wins: a slow target, whose requests pile up,
  gets fewer new ones, with no scan of every target and no herd on the one least busy.
- `HashRing`: consistent hashing (a ring of points per target, in proportion to its weight,
  as ketama). A key goes to the first usable target clockwise from its hash: while a target
  is out, only its keys move, each to the target after it, and they come back when it does.
  Points are placed by the target's origin, not its place in the list, so every process and
  instance maps a key alike, and adding a target moves only the keys it takes.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import zlib
from collections.abc import Callable, Sequence
from typing import Protocol

_M32 = 0xFFFFFFFF
# Ring points per target of average weight: the spread of shares shrinks as 1/sqrt(points).
POINTS_PER_TARGET = 160
MAX_POINTS = 16384  # the whole ring: bounded however many targets and weights


class Balancer(Protocol):
    def pick(self, usable: Sequence[bool], key: str, load: Callable[[int], int]) -> int:
        """The index of the target for a request; at least one of `usable` is True. `key`
        is what consistent hashing hashes; `load(i)`: requests in flight on target i."""
        ...


class SmoothRoundRobin:
    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = tuple(weights)
        self._current = [0] * len(self.weights)

    def pick(self, usable: Sequence[bool], key: str = "", load: object = None) -> int:
        current, weights = self._current, self.weights
        best = -1
        total = 0
        for i, weight in enumerate(weights):
            if not usable[i]:
                continue
            current[i] += weight
            total += weight
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        return best


class LeastRequest:
    def __init__(self, weights: Sequence[int], rand: Callable[[], float] = random.random) -> None:
        self.weights = tuple(weights)
        self._rand = rand

    def _draw(self, usable: Sequence[bool], total: int, skip: int = -1) -> int:
        point = self._rand() * total
        last = -1
        for i, weight in enumerate(self.weights):
            if not usable[i] or i == skip:
                continue
            last = i
            point -= weight
            if point < 0:
                return i
        return last  # rounding at the top end

    def pick(self, usable: Sequence[bool], key: str, load: Callable[[int], int]) -> int:
        weights = self.weights
        total = sum(w for i, w in enumerate(weights) if usable[i])
        first = self._draw(usable, total)
        rest = total - weights[first]
        if rest <= 0:
            return first  # the only usable target
        second = self._draw(usable, rest, first)
        # Fewer in flight per unit of weight wins; a tie keeps the first draw, so idle
        # targets share requests in proportion to their weights.
        if load(second) * weights[first] < load(first) * weights[second]:
            return second
        return first


def key_hash(key: str) -> int:
    """A 32-bit hash of `key`, the same in every process (Python's hash() is salted per
    process): CRC-32, mixed by murmur3's finaliser, since CRC's bits alone spread badly."""
    h = zlib.crc32(key.encode("utf-8", "surrogateescape"))
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


class HashRing:
    def __init__(self, names: Sequence[str], weights: Sequence[int]) -> None:
        """`names`: what places each target's points (its origin)."""
        total = sum(weights)
        budget = min(MAX_POINTS, POINTS_PER_TARGET * len(weights))
        points: list[tuple[int, int]] = []
        for i, (name, weight) in enumerate(zip(names, weights, strict=True)):
            for j in range(max(1, round(budget * weight / total))):
                digest = hashlib.blake2b(f"{name}#{j}".encode(), digest_size=4).digest()
                points.append((int.from_bytes(digest, "big"), i))
        points.sort()
        self._positions = [p for p, _ in points]
        self._owners = [i for _, i in points]

    def pick(self, usable: Sequence[bool], key: str, load: object = None) -> int:
        owners = self._owners
        n = len(owners)
        at = bisect.bisect_left(self._positions, key_hash(key))
        for step in range(n):
            owner = owners[(at + step) % n]
            if usable[owner]:
                return owner
        raise ValueError("no usable target")


def balancer(
    kind: str,
    names: Sequence[str],
    weights: Sequence[int],
    rand: Callable[[], float] = random.random,
) -> Balancer:
    """The balancer `kind` (config.upstream.Balance) over targets `names` with `weights`."""
    if kind == "least_request":
        return LeastRequest(weights, rand)
    if kind == "consistent_hash":
        return HashRing(names, weights)
    return SmoothRoundRobin(weights)
