"""Properties of the rules that decide who goes where: random splits divide journeys in the proportions
asked for, and re-entry rules admit exactly the entries a plain model of them admits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.journeys.blocks import journey_fraction, pick_share
from tidings.journeys.engine import reentry_refusal

JOURNEYS = 4000


@st.composite
def percents(draw: st.DrawFn) -> list[float]:
    """2 to 5 cohorts whose percents add up to 100."""
    cuts = sorted(draw(st.lists(st.integers(1, 99), min_size=1, max_size=4, unique=True)))
    edges = [0, *cuts, 100]
    return [float(b - a) for a, b in pairwise(edges)]


@settings(max_examples=60, deadline=None)
@given(shares=percents(), block=st.text(min_size=1, max_size=8), first=st.integers(1, 10**9))
def test_random_splits_follow_their_percents(shares: list[float], block: str, first: int) -> None:
    counts = [0] * len(shares)
    for journey_id in range(first, first + JOURNEYS):
        counts[pick_share(journey_fraction(journey_id, block), shares)] += 1
    for count, percent in zip(counts, shares, strict=True):
        p = percent / 100
        # Five standard deviations of a binomial: a fair split never strays that far.
        tolerance = 5 * math.sqrt(p * (1 - p) / JOURNEYS) + 1e-9
        assert abs(count / JOURNEYS - p) <= tolerance, (shares, counts)


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=6).filter(lambda w: sum(w) > 0),
    point=st.floats(0, 1, exclude_max=True),
)
def test_a_share_with_no_weight_is_never_picked(weights: list[float], point: float) -> None:
    chosen = pick_share(point, weights)
    assert 0 <= chosen < len(weights)
    assert weights[chosen] > 0 or all(w == 0 for w in weights[chosen:])


def test_a_journey_always_takes_the_same_branch() -> None:
    assert journey_fraction(42, "split") == journey_fraction(42, "split")
    assert journey_fraction(42, "split") != journey_fraction(43, "split")


@dataclass
class Model:
    """Re-entry as written in docs/campaigns.md, kept as a plain list of journeys."""

    mode: str
    every: int
    limit: int
    journeys: list[tuple[int, int]] = field(default_factory=list)

    def admits(self, now: int) -> bool:
        if self.journeys and self.mode == "once":
            return False
        if self.journeys and self.mode == "every" and now < max(s for s, _ in self.journeys) + self.every:
            return False
        return sum(1 for start, end in self.journeys if start <= now < end) < self.limit


@settings(max_examples=200, deadline=None)
@given(
    mode=st.sampled_from(["once", "always", "every"]),
    every=st.integers(1, 100),
    limit=st.integers(1, 3),
    triggers=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 60)), max_size=25),
)
def test_reentry_rules_admit_what_the_model_admits(
    mode: str, every: int, limit: int, triggers: list[tuple[int, int]]
) -> None:
    rules = {"mode": mode, "every": every if mode == "every" else None, "max_concurrent": limit}
    model = Model(mode, every, limit)
    now, entries, last = 0, 0, None
    for gap, length in triggers:
        now += gap
        running = sum(1 for start, end in model.journeys if start <= now < end)
        admitted = reentry_refusal(rules, entries, running, last, now) is None
        assert admitted == model.admits(now), (mode, every, limit, now, model.journeys)
        if admitted:
            entries, last = entries + 1, now
            model.journeys.append((now, now + length))
