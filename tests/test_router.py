"""Routers: exact choices on small cases, properties with hypothesis, frequencies with chi-square."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.errors import InputError
from simulator.router import (
    ROUTERS,
    LeastKVLoad,
    LeastOutstanding,
    PowerOfTwoChoices,
    RandomRouter,
    RoundRobin,
    make_router,
)

CHI2_999 = {3: 16.27, 9: 27.88}  # chi-square 0.999 quantiles by degrees of freedom


@dataclass
class View:
    outstanding: list[int]
    kv_used_frac: list[float] = field(default_factory=list)
    capacity_weight: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.outstanding)
        self.kv_used_frac = self.kv_used_frac or [0.0] * n
        self.capacity_weight = self.capacity_weight or [1.0] * n


def _chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = probabilities * counts.sum()
    return float(np.sum((counts - expected) ** 2 / expected))


def test_round_robin_cycles() -> None:
    router = RoundRobin(3, np.random.default_rng(0))
    view = View([5, 0, 9])
    assert [router.choose(view) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


@given(st.lists(st.integers(0, 50), min_size=1, max_size=40))
def test_least_outstanding_picks_first_minimum(outstanding: list[int]) -> None:
    choice = LeastOutstanding(len(outstanding), np.random.default_rng(0)).choose(View(outstanding))
    assert choice == outstanding.index(min(outstanding))


@given(
    st.lists(st.tuples(st.integers(0, 50), st.sampled_from([0.5, 1.0, 2.0, 3.0])), min_size=1, max_size=40)
)
def test_least_outstanding_respects_capacity_weights(pairs: list[tuple[int, float]]) -> None:
    outstanding = [p[0] for p in pairs]
    weights = [p[1] for p in pairs]
    choice = LeastOutstanding(len(pairs), np.random.default_rng(0)).choose(
        View(outstanding, capacity_weight=weights)
    )
    loads = [o / w for o, w in pairs]
    assert loads[choice] == min(loads) and choice == loads.index(min(loads))


def test_least_outstanding_weighted_example_and_weight_changes() -> None:
    router = LeastOutstanding(2, np.random.default_rng(0))
    assert router.choose(View([4, 3], capacity_weight=[2.0, 1.0])) == 0  # loads 2 vs 3
    assert router.choose(View([4, 3], capacity_weight=[1.0, 1.0])) == 1  # weights changed: recomputed


def test_least_kv_picks_lowest_occupancy_then_outstanding() -> None:
    router = LeastKVLoad(3, np.random.default_rng(0))
    assert router.choose(View([0, 9, 0], kv_used_frac=[0.5, 0.2, 0.9])) == 1
    assert router.choose(View([3, 1, 2], kv_used_frac=[0.0, 0.0, 0.0])) == 1


@settings(max_examples=60)
@given(st.lists(st.integers(0, 100), min_size=2, max_size=20), st.integers(0, 2**32 - 1))
def test_power_of_two_never_picks_a_strict_worst(outstanding: list[int], seed: int) -> None:
    worst = max(outstanding)
    router = PowerOfTwoChoices(len(outstanding), np.random.default_rng(seed))
    choices = {router.choose(View(outstanding)) for _ in range(200)}
    if outstanding.count(worst) == 1:
        assert outstanding.index(worst) not in choices


def test_power_of_two_lopsided_three() -> None:
    router = PowerOfTwoChoices(3, np.random.default_rng(1))
    counts = np.bincount([router.choose(View([0, 5, 100])) for _ in range(30_000)], minlength=3)
    assert counts[2] == 0
    # replica 0 wins whenever sampled (2 of the 3 pairs); replica 1 only in the pair (1, 2)
    assert _chi_square(counts[:2], np.array([2 / 3, 1 / 3])) < 10.83


def test_random_router_is_uniform() -> None:
    router = RandomRouter(10, np.random.default_rng(2))
    view = View([0] * 10)
    counts = np.bincount([router.choose(view) for _ in range(100_000)], minlength=10)
    assert _chi_square(counts, np.full(10, 0.1)) < CHI2_999[9]


def test_random_router_follows_capacity_weights() -> None:
    weights = [1.0, 2.0, 3.0, 4.0]
    router = RandomRouter(4, np.random.default_rng(3))
    view = View([0] * 4, capacity_weight=weights)
    counts = np.bincount([router.choose(view) for _ in range(100_000)], minlength=4)
    assert _chi_square(counts, np.array(weights) / 10.0) < CHI2_999[3]
    assert _chi_square(counts, np.full(4, 0.25)) > 1000  # and clearly not uniform


def test_random_routers_are_reproducible() -> None:
    view = View([0] * 7)
    for name in ("random", "power-of-two"):
        a = make_router(name, 7, np.random.default_rng(4))
        b = make_router(name, 7, np.random.default_rng(4))
        assert [a.choose(view) for _ in range(5000)] == [b.choose(view) for _ in range(5000)]


def test_registry_and_factory() -> None:
    assert set(ROUTERS) == {"round-robin", "random", "least-outstanding", "least-kv", "power-of-two"}
    for name in ROUTERS:
        router = make_router(name, 4, np.random.default_rng(0))
        assert 0 <= router.choose(View([1, 2, 3, 4], kv_used_frac=[0.4, 0.3, 0.2, 0.1])) < 4
    with pytest.raises(InputError, match="did you mean round-robin"):
        make_router("round_robin", 4, np.random.default_rng(0))
    with pytest.raises(InputError):
        make_router("random", 0, np.random.default_rng(0))


def test_single_replica_always_zero() -> None:
    for name in ROUTERS:
        router = make_router(name, 1, np.random.default_rng(0))
        assert all(router.choose(View([3])) == 0 for _ in range(50))
