"""Which (object, target) pairs the next cross-view step refreshes.

Between cross-view results each pair's mask is carried by per-camera propagation
(:mod:`vggts_ros.propagation`); the cross-view result corrects it. When the cross-view
step cannot recompute every pair on every set, :class:`RefreshScheduler` chooses the
pairs for the next step: **oldest refresh first** (the pair whose last cross-view result
is on the oldest frame; pairs never refreshed come before all others, in the order they
were added), so every pair takes its turn. A step takes up to ``max_pairs`` pairs: the oldest one, then, in
age order, pairs that share its group (by default its target camera, whose features a
backend computes once for all objects), then the next oldest.

A pair whose propagated mask is not good (its track was lost) may be moved up by
``lost_bonus`` seconds of age; the bonus is bounded, so it never starves the others.

**Bound.** With ``P`` pairs, at most ``b`` pairs per step (``b >= 1``), steps never
longer than ``T`` seconds, and the step's set at most ``L`` seconds old when it starts
(``L`` <= one frame interval when the step takes the newest set), every pair's refresh
age (now minus the stamp of the frame its last cross-view result was computed on) stays
below ``(ceil(P / b) + 1) * T + L + lost_bonus`` at all times (after its first
refresh). Why: a pair is chosen as soon as it is among the ``b`` highest priorities;
priorities are ages (plus at most ``lost_bonus``), every step removes the chosen pairs
from the top and they come back with age <= ``L + T``; so at most ``ceil(P / b) - 1``
steps can go before it, plus the step running when it became the oldest, plus its own.
``test/core/test_refresh.py`` checks it on random step costs and lost flags.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Iterable, List, Optional

Pair = Hashable  # usually (object_id, target_camera)


@dataclass
class PairState:
    pair: Pair
    added: float  # when the pair was added (seconds, the caller's clock)
    refreshed: Optional[float] = None  # stamp of the frame its newest cross-view result is on
    lost: bool = False  # its propagated mask is not good
    in_flight: bool = False  # chosen for a step that has not reported back
    count: int = 0  # cross-view results so far

    def age(self, now: float) -> float:
        """Seconds since the frame of its newest cross-view result (since it was added
        when it has none yet)."""
        return now - (self.refreshed if self.refreshed is not None else self.added)


def by_target(pair: Pair) -> Hashable:
    """Group of an ``(object, target)`` pair: its target camera."""
    return pair[1] if isinstance(pair, tuple) and len(pair) == 2 else pair


class RefreshScheduler:
    """Oldest-first choice of (object, target) pairs for the cross-view step."""

    def __init__(self, max_pairs: Optional[int] = None, lost_bonus: float = 0.0,
                 group: Optional[Callable[[Pair], Hashable]] = by_target) -> None:
        if max_pairs is not None and max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1 or None for all (got {max_pairs})")
        if lost_bonus < 0:
            raise ValueError(f"lost_bonus must be >= 0 seconds (got {lost_bonus})")
        self.max_pairs = max_pairs
        self.lost_bonus = float(lost_bonus)
        self.group = group
        self._pairs: Dict[Pair, PairState] = {}

    # ------------------------------------------------------------------ pairs
    def add(self, pair: Pair, now: float) -> None:
        """Start scheduling ``pair`` (no effect when it is scheduled already)."""
        if pair not in self._pairs:
            self._pairs[pair] = PairState(pair, float(now))

    def remove(self, pair: Pair) -> None:
        self._pairs.pop(pair, None)

    def remove_where(self, predicate: Callable[[Pair], bool]) -> None:
        """Stop scheduling every pair for which ``predicate`` holds (e.g. one object's)."""
        for p in [p for p in self._pairs if predicate(p)]:
            del self._pairs[p]

    @property
    def pairs(self) -> List[Pair]:
        return list(self._pairs)

    def state(self, pair: Pair) -> PairState:
        try:
            return self._pairs[pair]
        except KeyError:
            raise KeyError(f"pair {pair!r} is not scheduled") from None

    def set_lost(self, pair: Pair, lost: bool) -> None:
        """Tell the scheduler whether ``pair``'s propagated mask is good (False) or not."""
        if pair in self._pairs:
            self._pairs[pair].lost = bool(lost)

    # ------------------------------------------------------------------ steps
    def priority(self, pair: Pair, now: float) -> float:
        s = self._pairs[pair]
        return s.age(now) + (self.lost_bonus if s.lost else 0.0)

    def choose(self, now: float, max_pairs: Optional[int] = None) -> List[Pair]:
        """The pairs for the step starting at ``now``, marked in flight until
        :meth:`refreshed` or :meth:`cancel`. Empty when every pair is in flight."""
        limit = max_pairs if max_pairs is not None else self.max_pairs
        free = [s for s in self._pairs.values() if not s.in_flight]
        if not free:
            return []
        # Pairs never refreshed first (a new object is found everywhere as soon as can be),
        # then oldest first; ties to the pair refreshed fewer times, then in the order added.
        free.sort(key=lambda s: (s.refreshed is not None, -(s.age(now) + (self.lost_bonus if s.lost else 0.0)),
                                 s.count))
        n = len(free) if limit is None else min(limit, len(free))
        chosen = [free[0]]
        if n > 1 and self.group is not None:
            g = self.group(free[0].pair)
            chosen += [s for s in free[1:] if self.group(s.pair) == g][: n - 1]
        for s in free[1:]:
            if len(chosen) >= n:
                break
            if s not in chosen:
                chosen.append(s)
        for s in chosen:
            s.in_flight = True
        return [s.pair for s in chosen]

    def refreshed(self, pairs: Iterable[Pair], stamp: float) -> None:
        """Cross-view results for ``pairs`` computed on the frame at ``stamp``."""
        for p in pairs:
            s = self._pairs.get(p)
            if s is None:  # removed while in flight
                continue
            s.in_flight = False
            s.count += 1
            if s.refreshed is None or stamp > s.refreshed:
                s.refreshed = float(stamp)

    def cancel(self, pairs: Iterable[Pair]) -> None:
        """The step for ``pairs`` produced nothing (they stay as old as they were)."""
        for p in pairs:
            s = self._pairs.get(p)
            if s is not None:
                s.in_flight = False

    # ------------------------------------------------------------------ diagnostics
    def ages(self, now: float) -> Dict[Pair, float]:
        """Refresh age of every pair at ``now`` (seconds)."""
        return {p: s.age(now) for p, s in self._pairs.items()}

    def steps_to_wait(self) -> int:
        """``K`` of the bound: the most steps a pair can wait, its own included, once it
        has been refreshed (one cross-view worker)."""
        P = len(self._pairs)
        if P == 0:
            return 0
        b = P if self.max_pairs is None else min(self.max_pairs, P)
        if self.group is None:
            return (P - 1) // b + 1  # each step takes the b oldest
        sizes = Counter(self.group(p) for p in self._pairs)
        if b >= max(sizes.values()):
            return len(sizes)  # each step takes the oldest pair's whole group
        return P  # each step takes at least the oldest pair

    def bound(self, step_max: float, set_age_max: float) -> float:
        """The refresh-age bound of the module docstring for the current pairs, given the
        longest step and the oldest set a step may start on (seconds)."""
        return (self.steps_to_wait() + 1) * step_max + set_age_max + self.lost_bonus
