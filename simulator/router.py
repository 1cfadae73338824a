"""Routing: which replica gets the next request. Pure decisions, no simpy.

A router looks at a ``FleetView`` (per-replica lists, index = replica id) and returns a replica index.
``choose`` runs once per arriving request (~200k calls per run over ~90 replicas), so it is plain
Python over lists (C-speed builtins such as ``min``/``list.index``/``map``), O(n) at worst, with random
numbers drawn from the injected generator in blocks rather than one numpy call per decision.

Load of replica i = outstanding[i] / capacity_weight[i] (requests per unit of relative capacity).
Ties go to the lowest index unless the policy is random. Routers assume the view has
``num_replicas`` entries; they do not re-check it on every call.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from typing import Protocol

import numpy as np

from simulator.errors import InputError, unknown_name

_BLOCK = 4096  # uniform draws fetched from the generator at a time


class FleetView(Protocol):
    """Per-replica state seen by a router, index = replica id."""

    outstanding: list[int]  # requests routed to replica i and not finished
    kv_used_frac: list[float]  # KV-cache occupancy of replica i in [0, 1]
    capacity_weight: list[float]  # relative capacity of replica i (1.0 homogeneous; larger = faster)


class Router(Protocol):
    """A routing policy: ``choose`` returns the index of the replica for the next request."""

    def choose(self, view: FleetView) -> int: ...


class _Uniforms:
    """Uniform [0, 1) numbers from ``rng``, fetched in blocks (deterministic for a given seed)."""

    __slots__ = ("_block", "_pos", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._block: list[float] = []
        self._pos = 0

    def next(self) -> float:
        if self._pos >= len(self._block):
            self._block = self._rng.random(_BLOCK).tolist()
            self._pos = 0
        value = self._block[self._pos]
        self._pos += 1
        return value


def _check_count(num_replicas: int) -> None:
    if num_replicas < 1:
        raise InputError(f"num_replicas must be >= 1, got {num_replicas}")


def _uniform_weights(weights: list[float]) -> bool:
    first = weights[0]
    return all(w == first for w in weights)


class _WeightCache:
    """Remembers the last capacity weights seen (a C-speed list compare per call) and whether they
    are all equal, so a homogeneous fleet skips the per-replica division."""

    __slots__ = ("uniform", "weights")

    def __init__(self) -> None:
        self.weights: list[float] | None = None
        self.uniform = True

    def update(self, weights: list[float]) -> bool:
        """True when ``weights`` changed since the last call."""
        if weights == self.weights:
            return False
        self.weights = list(weights)
        self.uniform = _uniform_weights(weights)
        return True


class RoundRobin:
    """Replicas 0, 1, ..., n-1, 0, 1, ... regardless of state."""

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        _check_count(num_replicas)
        self.num_replicas = num_replicas
        self._next = 0

    def choose(self, view: FleetView) -> int:
        chosen = self._next
        self._next = chosen + 1 if chosen + 1 < self.num_replicas else 0
        return chosen


class RandomRouter:
    """Independent random choice: uniform when all capacity weights are equal, otherwise with
    probability proportional to capacity_weight. Splits a Poisson stream into independent Poisson
    streams (the single-replica shortcut of the sizing search relies on this)."""

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        _check_count(num_replicas)
        self.num_replicas = num_replicas
        self._uniforms = _Uniforms(rng)
        self._cache = _WeightCache()
        self._cumulative: list[float] = []

    def choose(self, view: FleetView) -> int:
        weights = view.capacity_weight
        if self._cache.update(weights):
            self._cumulative = [] if self._cache.uniform else list(itertools.accumulate(weights))
        u = self._uniforms.next()
        if not self._cumulative:
            return int(u * self.num_replicas)
        index = bisect.bisect_right(self._cumulative, u * self._cumulative[-1])
        return min(index, self.num_replicas - 1)


class LeastOutstanding:
    """Join the replica with the fewest outstanding requests per unit capacity (ties: lowest index)."""

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        _check_count(num_replicas)
        self.num_replicas = num_replicas
        self._cache = _WeightCache()

    def choose(self, view: FleetView) -> int:
        outstanding, weights = view.outstanding, view.capacity_weight
        self._cache.update(weights)
        if self._cache.uniform:
            return outstanding.index(min(outstanding))
        loads = list(map(operator.truediv, outstanding, weights))
        return loads.index(min(loads))


class LeastKVLoad:
    """Join the replica with the lowest KV-cache occupancy; ties broken by least outstanding per unit
    capacity, then lowest index. Occupancy counts only admitted requests, so it lags the routing of a
    burst; the outstanding tie-break spreads requests routed at the same instant."""

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        _check_count(num_replicas)
        self.num_replicas = num_replicas

    def choose(self, view: FleetView) -> int:
        kv = view.kv_used_frac
        lowest = min(kv)
        if kv.count(lowest) == 1:
            return kv.index(lowest)
        tied = [i for i, frac in enumerate(kv) if frac == lowest]
        out, weights = view.outstanding, view.capacity_weight
        return min(tied, key=lambda i: out[i] / weights[i])


class PowerOfTwoChoices:
    """Sample two distinct replicas uniformly; take the one with the lower outstanding/weight (the first
    sampled on a tie). So a replica whose load is strictly the highest is never chosen (n >= 2)."""

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        _check_count(num_replicas)
        self.num_replicas = num_replicas
        self._uniforms = _Uniforms(rng)

    def choose(self, view: FleetView) -> int:
        n = self.num_replicas
        if n == 1:
            return 0
        first = int(self._uniforms.next() * n)
        second = int(self._uniforms.next() * (n - 1))
        if second >= first:
            second += 1
        out, weights = view.outstanding, view.capacity_weight
        if out[second] / weights[second] < out[first] / weights[first]:
            return second
        return first


ROUTERS: dict[str, type] = {
    "round-robin": RoundRobin,
    "random": RandomRouter,
    "least-outstanding": LeastOutstanding,
    "least-kv": LeastKVLoad,
    "power-of-two": PowerOfTwoChoices,
}


def make_router(name: str, num_replicas: int, rng: np.random.Generator) -> Router:
    """The router called ``name`` (a key of ``ROUTERS``); InputError for an unknown name."""
    if name not in ROUTERS:
        raise unknown_name("router", name, ROUTERS)
    return ROUTERS[name](num_replicas, rng)
