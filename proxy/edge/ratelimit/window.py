"""The sliding-window counter: pure maths over a state list, with the clock passed in.

Each limit of N requests per W seconds keeps two counts: the requests admitted in the
current fixed window [kW, (k+1)W) and in the previous one. At time t, a fraction
f = t/W - k into the current window, the requests of the last W seconds are estimated as

    estimate = previous * (1 - f) + current

assuming the previous window's requests were spread evenly. A request is admitted when,
for every limit, estimate + 1 <= N; it then counts in every limit's current window. A
refused request counts nowhere, so a client that keeps knocking while refused still
regains quota as the window slides (as nginx `limit_req` and Kong do).

Worst-case error, against an exact log of every request (a sliding log):

* No window-boundary burst: right after a boundary the estimate is the whole previous
  count, so N requests at the end of one window leave no room at the start of the next;
  no fixed window ever admits more than N.
* Over-admission: in a true W-second window the counter admits at most N + previous * f,
  i.e. fewer than 2N, and only in one adversarial shape: the previous window's N requests
  all came at its very end, then requests arrive evenly over the current one. When the
  previous window's traffic was even, the estimate is exact. (Cloudflare measured 0.003%
  of wrong decisions on 400 million real requests with this same counter.)
* Under-admission: requests that already left the true window still weigh while their
  window is the previous one, so a client may be told to wait up to W longer than a log
  would say (N requests at the very start of a window: a log frees all N one W later, the
  counter frees them one by one across the next window).

In exchange the state is three integers per limit and client, whatever N is, and one
atomic Redis script can run the same maths (redis_backend.py) for every instance.

State layout, per limit i: state[3i] = index k of the current window, state[3i + 1] =
previous count, state[3i + 2] = current count. `new_state` makes an empty one.
"""

from __future__ import annotations

from collections.abc import Sequence

# Float slack: an estimate of exactly N - 1 must admit, whatever rounding did to it.
EPS = 1e-9

# (allowed, which limit the numbers are for, remaining, seconds): see `hit`.
Outcome = tuple[bool, int, int, float]


def new_state(limits: int) -> list[float]:
    # Window -2: never the current one nor the one before it. Floats: see hit_one.
    return [-2.0, 0.0, 0.0] * limits


def hit(state: list[float], windows: Sequence[int], limits: Sequence[int], now: float) -> Outcome:
    """Count one request at `now` (seconds >= 0, any epoch) if every limit admits it.

    Returns (allowed, i, remaining, wait) for the limit i that matters most to the client:
    when allowed, the one with the fewest requests left (on a tie the longest wait), its
    `remaining` requests and `wait` seconds until it has one more; when refused, the
    refusing limit that frees up last, remaining 0, and `wait` seconds until it would
    admit this request (Retry-After).
    """
    n = len(windows)
    if n == 1:
        return hit_one(state, windows[0], limits[0], now)
    allowed = True
    for i in range(n):
        x = now / windows[i]
        k = int(x)
        j = 3 * i
        if state[j] != k:
            state[j + 1] = state[j + 2] if state[j] == k - 1 else 0
            state[j + 2] = 0
            state[j] = k
        if state[j + 1] * (1.0 - (x - k)) + state[j + 2] > limits[i] - 1 + EPS:
            allowed = False
    which, remaining, wait = 0, -1, 0.0
    for i in range(n):
        j = 3 * i
        w, limit = windows[i], limits[i]
        f = now / w - state[j]
        prev = state[j + 1]
        if allowed:
            curr = state[j + 2] = state[j + 2] + 1
            left = max(0, int(limit - (prev * (1.0 - f) + curr) + EPS))
            until = until_at_most(prev, curr, f, w, limit - left - 1)
            if remaining < 0 or left < remaining or (left == remaining and until > wait):
                which, remaining, wait = i, left, until
        else:
            curr = state[j + 2]
            if prev * (1.0 - f) + curr <= limit - 1 + EPS:
                continue  # this limit would admit: not why the request is refused
            until = until_at_most(prev, curr, f, w, limit - 1)
            if remaining < 0 or until > wait:
                which, remaining, wait = i, 0, until
    return allowed, which, remaining, wait


def hit_one(state: list[float], w: float, limit: float, now: float) -> Outcome:
    """`hit` for a single limit: the common case, and the memory backend's hot path.

    Written for floats (`new_state`'s, and the memory backend passes `w` and `limit` as
    floats): CPython specialises float-with-float arithmetic, not float-with-int, and
    every count here is a whole number far below 2**53, so nothing is rounded.
    """
    x = now / w
    k = x // 1.0
    if state[0] != k:
        state[1] = state[2] if state[0] == k - 1.0 else 0.0
        state[2] = 0.0
        state[0] = k
    f = x - k
    prev = state[1]
    curr = state[2]
    decayed = prev * (1.0 - f)
    estimate = decayed + curr
    if estimate > limit - 1.0 + EPS:
        return False, 0, 0, until_at_most(prev, curr, f, w, limit - 1.0)
    curr = state[2] = curr + 1.0
    left = int(limit - 1.0 - estimate + EPS)
    if left < 0:
        left = 0
    # until_at_most(prev, curr, f, w, limit - left - 1), written out: a call costs more
    # than the sums on this path, taken by every request the memory backend admits.
    target = limit - 1.0 - left
    if decayed + curr <= target + EPS:
        return True, 0, left, 0.0
    if curr <= target + EPS:
        return True, 0, left, (1.0 - (target - curr) / prev - f) * w
    return True, 0, left, (2.0 - f - target / curr) * w


def until_at_most(prev: float, curr: float, f: float, w: float, target: float) -> float:
    """Seconds until the estimate falls to `target` or below, if nothing more is admitted.

    Within the current window only the previous count decays; once the window rolls, the
    current count becomes the previous one and decays in turn (never later than that).
    """
    if prev * (1.0 - f) + curr <= target + EPS:
        return 0.0
    if curr <= target + EPS:  # then prev > 0: the previous count decays enough in time
        return (1.0 - (target - curr) / prev - f) * w
    return (2.0 - f - target / curr) * w  # curr > target >= 0


def longest(windows: Sequence[int]) -> int:
    """The index of the longest window: the last of a client's state to go stale."""
    return max(range(len(windows)), key=windows.__getitem__)
