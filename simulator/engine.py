"""The engine scheduler of one replica, as a pure state machine (no simpy; ``replica.py`` drives it).

It behaves like vLLM's scheduler: continuous batching; every running decode sequence takes one token
of the per-step budget (``max_batched_tokens``), prefills are chunked into what is left; at most
``max_num_seqs`` sequences run; a request is admitted (FCFS) only when the KV blocks for its first
chunk are free; when a decoding sequence needs a new block and none is free, the most recently
admitted sequence is preempted (its blocks freed, and later recomputed: its prompt plus the tokens
it had generated are prefilled again).

Work per step does not grow with the batch: the batch is summarised by running sums (decode
sequences, their total context, total sliding-window context), and per-sequence events (finishing,
needing a new KV block, a sliding window filling up) are kept in calendars keyed by step index.
A decoding sequence's context at step ``s`` is ``target + (s - join_step)`` where ``target`` is
the number of tokens it prefilled and ``join_step`` the step that completed its prefill.

Room for what comes next: a prefill-only replica hands sequences off at ``_complete_prefill``
instead of joining them to the decode set; a decode-only replica admits sequences with their KV
already present; speculative decoding advances ``tokens_per_step`` > 1 per decode step (the
calendars are in steps, so only the token arithmetic changes); prefix-cache hits reduce ``target``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from simulator.iteration import StepModel, prefill_pairs
from simulator.kv_cache import KVCache

NAN = float("nan")


@dataclass
class RequestTable:
    """Per-request state shared by all replicas of a run (plain lists: fast scalar access)."""

    arrival_at_s: list[float]
    input_tokens: list[int]
    output_tokens: list[int]
    first_token_at_s: list[float] = field(default_factory=list)
    finish_at_s: list[float] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    preemptions: list[int] = field(default_factory=list)
    replica: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.arrival_at_s)
        self.first_token_at_s = [NAN] * n
        self.finish_at_s = [NAN] * n
        self.generated = [0] * n
        self.preemptions = [0] * n
        self.replica = [-1] * n


class ReplicaEngine:
    """Scheduler state of one replica. Call ``enqueue`` on arrival, then alternate ``plan_step``
    (returns the step's duration in s, or None when idle) and ``finish_step(now_s)``."""

    def __init__(
        self,
        replica_id: int,
        step_model: StepModel,
        kv: KVCache,
        table: RequestTable,
        *,
        max_num_seqs: int,
        max_batched_tokens: int,
    ) -> None:
        dep = step_model.deployment
        self.replica_id = replica_id
        self.step_model = step_model
        self.kv = kv
        self.table = table
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.window = dep.model.sliding_window_tokens or 0
        ratio = dep.model.kv_elements_per_token_sliding / dep.model.kv_elements_per_token_full
        self.sliding_extra_blocks = kv.blocks_for(self.window) if self.window and ratio else 0
        self.max_sequence_blocks = kv.capacity_blocks - self.sliding_extra_blocks
        self.waiting: deque[int] = deque()
        self.prefill: list[list[int]] = []  # [rid, done_tokens, target_tokens]
        self.decoding: dict[int, int] = {}  # rid -> epoch, in admission order
        self.join: dict[int, tuple[int, int]] = {}  # rid -> (join_step, target)
        self.epoch: dict[int, int] = {}
        self.fin_cal: dict[int, list[tuple[int, int]]] = {}
        self.grow_cal: dict[int, list[tuple[int, int]]] = {}
        self.slide_cal: dict[int, list[tuple[int, int]]] = {}
        self.step = 0
        self.n_dec = 0
        self.ctx_sum = 0
        self.slide_sum = 0
        self.slide_growing = 0
        self.outstanding = 0
        self.busy_s = 0.0
        self.kv_frac_time = 0.0
        self.rejected = 0
        self._chunks: list[tuple[list[int], int]] = []

    # ----------------------------------------------------------------- intake
    def enqueue(self, rid: int) -> None:
        """A request arrives at this replica (rejected if it could never fit in the KV cache)."""
        t = self.table
        t.replica[rid] = self.replica_id
        if self.kv.blocks_for(t.input_tokens[rid] + t.output_tokens[rid]) > self.max_sequence_blocks:
            self.rejected += 1
            return
        self.outstanding += 1
        self.waiting.append(rid)

    @property
    def has_work(self) -> bool:
        """Whether a step could run now."""
        return bool(self.n_dec or self.prefill or self.waiting)

    # ----------------------------------------------------------------- planning
    def plan_step(self) -> float | None:
        """Form the next step's batch; return its duration (s), or None if nothing can run."""
        s = self.step + 1
        grow = self.grow_cal.pop(s, None)
        if grow:
            self._grow(s, grow)
        budget = self.max_batched_tokens - self.n_dec
        chunks = self._chunks = []
        tokens = pairs_full = pairs_slide = 0.0
        for entry in self.prefill:
            if budget <= 0:
                break
            c = min(entry[2] - entry[1], budget)
            extra = self.kv.blocks_for(entry[1] + c) - self.kv.blocks_for(entry[1])
            if not self.kv.allocate(entry[0], extra):
                break
            chunks.append((entry, c))
            budget -= c
        while self.waiting and budget > 0 and self.n_dec + len(self.prefill) < self.max_num_seqs:
            rid = self.waiting[0]
            target = self.table.input_tokens[rid] + self.table.generated[rid]
            c = min(target, budget)
            if not self.kv.allocate(rid, self.kv.blocks_for(c) + self.sliding_extra_blocks):
                break
            self.waiting.popleft()
            entry = [rid, 0, target]
            self.prefill.append(entry)
            chunks.append((entry, c))
            budget -= c
        for entry, c in chunks:
            tokens += c
            pairs_full += prefill_pairs(c, entry[1])
            if self.window:
                pairs_slide += prefill_pairs(c, entry[1], self.window)
        if not chunks and not self.n_dec:
            return None
        dt = self.step_model.step_time_s(tokens, pairs_full, pairs_slide, self.n_dec, self.ctx_sum, self.slide_sum)
        self.busy_s += dt
        self.kv_frac_time += self.kv.occupancy_frac * dt
        return dt

    def _valid(self, rid: int, epoch: int) -> bool:
        return self.decoding.get(rid) == epoch

    def _grow(self, s: int, entries: list[tuple[int, int]]) -> None:
        block = self.kv.block_tokens
        for rid, epoch in entries:
            if not self._valid(rid, epoch):
                continue
            while not self.kv.grow(rid):
                if not self._preempt_one(s):
                    return
                if not self._valid(rid, epoch):
                    break
            else:
                nxt = s + block
                if nxt <= self._finish_step(rid):
                    self.grow_cal.setdefault(nxt, []).append((rid, epoch))

    def _finish_step(self, rid: int) -> int:
        join_step, target = self.join[rid]
        return join_step + self.table.output_tokens[rid] - (target - self.table.input_tokens[rid]) - 1

    def _ctx(self, rid: int, s: int) -> int:
        join_step, target = self.join[rid]
        return target + (s - join_step)

    def _preempt_one(self, s: int) -> bool:
        """Preempt the most recently admitted decoding sequence (recompute later). False if none."""
        if not self.decoding:
            return False
        rid, _ = self.decoding.popitem()
        self._leave_decode(rid, s)
        self.kv.free(rid)
        self.epoch[rid] = self.epoch.get(rid, 0) + 1
        self.table.preemptions[rid] += 1
        self.waiting.appendleft(rid)
        return True

    def _leave_decode(self, rid: int, s: int) -> None:
        ctx = self._ctx(rid, s)
        self.n_dec -= 1
        self.ctx_sum -= ctx
        if self.window:
            self.slide_sum -= min(ctx, self.window)
            if ctx < self.window:
                self.slide_growing -= 1
        del self.join[rid]

    # ----------------------------------------------------------------- completion
    def finish_step(self, now_s: float) -> None:
        """Apply the step that just ended at ``now_s``: tokens advance, sequences finish or join."""
        s = self.step = self.step + 1
        done = self.fin_cal.pop(s, None)
        if done:
            for rid, epoch in done:
                if self._valid(rid, epoch):
                    del self.decoding[rid]
                    self._leave_decode(rid, s)
                    self._complete(rid, now_s)
        self.ctx_sum += self.n_dec
        if self.window:
            self.slide_sum += self.slide_growing
            crossed = self.slide_cal.pop(s, None)  # sequences whose context reaches the window at s + 1
            if crossed:
                self.slide_growing -= sum(1 for rid, epoch in crossed if self._valid(rid, epoch))
        for entry, c in self._chunks:
            entry[1] += c
            if entry[1] >= entry[2]:
                self._complete_prefill(entry, s, now_s)
        if any(entry[1] >= entry[2] for entry in self.prefill):
            self.prefill = [entry for entry in self.prefill if entry[1] < entry[2]]
        self._chunks = []

    def _complete(self, rid: int, now_s: float) -> None:
        self.table.finish_at_s[rid] = now_s
        self.kv.free(rid)
        self.outstanding -= 1

    def _complete_prefill(self, entry: list[int], s: int, now_s: float) -> None:
        rid, _, target = entry
        t = self.table
        t.generated[rid] += 1
        if t.generated[rid] == 1:
            t.first_token_at_s[rid] = now_s
        remaining = t.output_tokens[rid] - t.generated[rid]
        if remaining <= 0:
            self._complete(rid, now_s)
            return
        epoch = self.epoch.get(rid, 0)
        self.decoding[rid] = epoch
        self.join[rid] = (s, target)
        self.n_dec += 1
        self.ctx_sum += target + 1
        self.fin_cal.setdefault(s + remaining, []).append((rid, epoch))
        block = self.kv.block_tokens
        first_grow = (1 - target) % block or block
        if first_grow <= remaining:
            self.grow_cal.setdefault(s + first_grow, []).append((rid, epoch))
        if self.window:
            self.slide_sum += min(target + 1, self.window)
            if target + 1 < self.window:
                self.slide_growing += 1
                self.slide_cal.setdefault(s + self.window - target - 1, []).append((rid, epoch))
