"""The simpy process of one replica: plan a step, hold for its duration, apply it; sleep when idle.

The simulation clock is in seconds. All decisions live in ``engine.ReplicaEngine``; this loop only
advances time. Arrivals reach the engine either pushed by the fleet's router process (``wake``) or,
for routers that do not look at replica state, pulled from a pre-routed, time-sorted list at each
step boundary (identical semantics: a request that arrives during a step is admitted at the next
step boundary), which saves one simpy event per request.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from simulator.engine import ReplicaEngine


class Replica:
    """A replica on the simpy clock. ``pending`` holds pre-routed arrivals (rid, arrival_at_s)."""

    def __init__(self, env: simpy.Environment, engine: ReplicaEngine, capacity_weight: float = 1.0) -> None:
        self.env = env
        self.engine = engine
        self.capacity_weight = capacity_weight
        self.pending_ids: list[int] = []
        self.pending_at_s: list[float] = []
        self._next = 0
        self._wake: simpy.Event | None = None
        self.process = env.process(self._run())

    def push(self, rid: int) -> None:
        """A routed arrival, now: enqueue it and wake the replica if it sleeps."""
        self.engine.enqueue(rid)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _pull(self, now_s: float) -> None:
        ids, times, i = self.pending_ids, self.pending_at_s, self._next
        n = len(ids)
        while i < n and times[i] <= now_s:
            self.engine.enqueue(ids[i])
            i += 1
        self._next = i

    def _run(self) -> Generator[Any, Any, None]:
        env, engine = self.env, self.engine
        plan, finish, timeout = engine.plan_step, engine.finish_step, env.timeout
        pre_routed = bool(self.pending_ids)
        while True:
            if pre_routed:
                self._pull(env.now)
            dt = plan(env.now)
            if dt is not None:
                yield timeout(dt)
                finish(env.now)
                continue
            if pre_routed:
                if self._next >= len(self.pending_ids):
                    return
                yield timeout(self.pending_at_s[self._next] - env.now)
                engine.enqueue(self.pending_ids[self._next])  # due now, whatever the float rounding
                self._next += 1
            else:
                self._wake = env.event()
                yield self._wake
                self._wake = None
