"""The engine scheduler of one replica, as a pure state machine (no simpy; ``replica.py`` drives it).

It behaves like vLLM's scheduler: continuous batching; every running decode sequence takes one token
of the per-step budget (``max_batched_tokens``), prefills are chunked into what is left; at most
``max_num_seqs`` sequences run; a request is admitted (FCFS) only when the KV blocks for its first
chunk are free; when a decoding sequence needs a new block and none is free, the most recently
admitted sequence is preempted (its blocks freed, and later recomputed: its prompt plus the tokens
it had generated are prefilled again).

Work per step does not grow with the batch: the batch is summarised by running sums (decode
sequences, their total context, total sliding-window context); per-sequence events (finishing, a
sliding window filling up) are kept in calendars keyed by step index; and KV growth is counted by
phase: a sequence needs a new block at step ``s`` iff ``s % B`` equals its phase
``(1 - target + join_step) % B`` (its blocks are then all full), so ``phase_count[s % B]`` is the
number of blocks the batch needs at step ``s``.
A decoding sequence's context at step ``s`` is ``target + (s - join_step)`` where ``target`` is
the number of tokens it prefilled and ``join_step`` the step that completed its prefill.

Roles (disaggregated prefill/decode serving, ``ROLES``): a ``prefill`` replica hands a sequence off when its
prefill completes (its first token is emitted there; the request is complete for this replica and its KV
blocks are freed); a ``decode`` replica admits sequences whose KV was computed elsewhere: at admission a
request holds the blocks of its prompt, counts its first token as emitted at its arrival here (the hand-off
instant, so the wait for a decode slot shows in its TPOT), and decodes from the next step, with no prefill
work. ``mixed`` (the default) does both. Room for what comes next: prefix-cache hits reduce ``target``.

Speculative decoding keeps every calendar as it is: the step model prices a step per emitted token
(1 / ``tokens_per_step`` of a real verification step, see ``StepModel.step_time_s``), so one engine
step still advances each decoding sequence by one token; only a step's prefill budget shrinks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from simulator.deployment import prefill_budget_tokens, query_tokens_per_seq
from simulator.iteration import StepModel, prefill_pairs
from simulator.kv_cache import KVCache

NAN = float("nan")
ROLES = ("mixed", "prefill", "decode")


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
    scheduled_at_s: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.arrival_at_s)
        self.first_token_at_s = [NAN] * n
        self.finish_at_s = [NAN] * n
        self.generated = [0] * n
        self.preemptions = [0] * n
        self.replica = [-1] * n
        self.scheduled_at_s = [NAN] * n


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
        role: str = "mixed",
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown replica role '{role}'; valid: {', '.join(ROLES)}")
        dep = step_model.deployment
        self.role = role
        self.replica_id = replica_id
        self.step_model = step_model
        self.kv = kv
        self.table = table
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.speculative = dep.layout.speculative  # the step's prefill budget: ``prefill_budget_tokens``
        self.decode_cap = min(max_num_seqs, int(max_batched_tokens // query_tokens_per_seq(dep)))
        self.window = dep.model.sliding_window_tokens or 0
        ratio = dep.model.kv_elements_per_token_sliding / dep.model.kv_elements_per_token_full
        self.sliding_extra_blocks = kv.blocks_for(self.window) if self.window and ratio else 0
        self.max_sequence_blocks = kv.capacity_blocks - self.sliding_extra_blocks
        self.waiting: deque[int] = deque()
        self.prefill: list[list[int]] = []  # [rid, done_tokens, target_tokens]
        self.decoding: dict[int, int] = {}  # rid -> epoch, in the order prefills completed
        self.join: dict[int, tuple[int, int]] = {}  # rid -> (join_step, target)
        self.epoch: dict[int, int] = {}
        self.fin_cal: dict[int, list[tuple[int, int]]] = {}
        self.phase_count = [0] * kv.block_tokens
        self._last_phase = 0
        self.prefill_blocks: dict[int, int] = {}
        self.slide_cal: dict[int, list[tuple[int, int]]] = {}
        self.step = 0
        self.n_dec = 0
        self.ctx_sum = 0
        self.slide_sum = 0
        self.slide_growing = 0
        self.outstanding_list = [0]
        self.outstanding_index = 0
        self.busy_s = 0.0
        self.kv_frac_time = 0.0
        self.rejected = 0
        self._chunks: list[tuple[list[int], int]] = []

    # ----------------------------------------------------------------- intake
    def enqueue(self, rid: int) -> None:
        """A request arrives at this replica (rejected if it could never fit in the KV cache)."""
        t = self.table
        t.replica[rid] = self.replica_id
        held = t.input_tokens[rid] + (0 if self.role == "prefill" else t.output_tokens[rid])
        if self.kv.blocks_for(held) > self.max_sequence_blocks:
            self.rejected += 1
            return
        self.outstanding_list[self.outstanding_index] += 1
        self.waiting.append(rid)

    @property
    def outstanding(self) -> int:
        """Requests routed here and not finished (rejected ones excluded)."""
        return self.outstanding_list[self.outstanding_index]

    def share_outstanding(self, counts: list[int], index: int) -> None:
        """Keep the outstanding count in a fleet-wide list (routers read it without copying)."""
        counts[index] = self.outstanding
        self.outstanding_list, self.outstanding_index = counts, index

    @property
    def has_work(self) -> bool:
        """Whether a step could run now."""
        return bool(self.n_dec or self.prefill or self.waiting)

    # ----------------------------------------------------------------- planning
    def plan_step(self, now_s: float) -> float | None:
        """Form the next step's batch at ``now_s``; return its duration (s), or None if nothing can run."""
        s = self.step + 1
        if self.role == "decode":
            self._admit_decoded(now_s)
        if self.n_dec:
            self._grow(s)
        budget = self.max_batched_tokens - self.n_dec
        if self.speculative:
            budget = int(prefill_budget_tokens(self.step_model.deployment, self.n_dec))
        chunks = self._chunks = []
        tokens = pairs_full = pairs_slide = 0.0
        for entry in self.prefill:
            if budget <= 0:
                break
            c = min(entry[2] - entry[1], budget)
            extra = self.kv.blocks_for(entry[1] + c) - self.kv.blocks_for(entry[1])
            if not self.kv.allocate(extra):
                break
            self.prefill_blocks[entry[0]] += extra
            chunks.append((entry, c))
            budget -= c
        while (self.waiting and budget > 0 and self.n_dec + len(self.prefill) < self.max_num_seqs
               and self.role != "decode"):
            rid = self.waiting[0]
            target = self.table.input_tokens[rid] + self.table.generated[rid]
            c = min(target, budget)
            blocks = self.kv.blocks_for(c) + self.sliding_extra_blocks
            if not self.kv.allocate(blocks):
                break
            self.prefill_blocks[rid] = blocks
            self.waiting.popleft()
            if self.table.generated[rid] == 0 and self.table.preemptions[rid] == 0:
                self.table.scheduled_at_s[rid] = max(now_s, self.table.arrival_at_s[rid])
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
            if self.prefill:  # every block is held by stalled prefills: requeue the last one
                self._requeue_prefill()
                return self.plan_step(now_s)
            return None
        dt = self.step_model.step_time_s(
            tokens, pairs_full, pairs_slide, self.n_dec, self.ctx_sum, self.slide_sum
        )
        self.busy_s += dt
        self.kv_frac_time += self.kv.occupancy_frac * dt
        return dt

    def _valid(self, rid: int, epoch: int) -> bool:
        return self.decoding.get(rid) == epoch

    def _grow(self, s: int) -> None:
        """Give every decoding sequence whose blocks are full a new one; preempt (LIFO) if short."""
        block = self.kv.block_tokens
        needed = self.phase_count[s % block]
        while needed > self.kv.free_blocks:
            rid = self._preempt_one(s)
            if rid is None:
                return
            if self._last_phase == s % block:
                needed -= 1
        self.kv.used_blocks += needed

    def _ctx(self, rid: int, s: int) -> int:
        join_step, target = self.join[rid]
        return target + (s - join_step)

    def _preempt_one(self, s: int) -> int | None:
        """Preempt the most recently admitted decoding sequence before step ``s`` grows it (its
        prompt and generated tokens are recomputed later). Returns its id, or None if none."""
        if not self.decoding:
            return None
        rid, _ = self.decoding.popitem()
        self.table.generated[rid] += s - 1 - self.join[rid][0]  # tokens decoded at join+1 .. s-1
        self.kv.free(self._blocks_held(rid, s - 1))
        self._leave_decode(rid, s)
        self.epoch[rid] = self.epoch.get(rid, 0) + 1
        self.table.preemptions[rid] += 1
        self.waiting.appendleft(rid)
        return rid

    def _requeue_prefill(self) -> None:
        rid = self.prefill.pop()[0]
        self.kv.free(self.prefill_blocks.pop(rid))
        self.table.preemptions[rid] += 1
        self.waiting.appendleft(rid)

    def _blocks_held(self, rid: int, after_step: int) -> int:
        """Blocks a decoding sequence holds once step ``after_step`` has grown it."""
        join_step, target = self.join[rid]
        return self.kv.blocks_for(target + after_step - join_step) + self.sliding_extra_blocks

    def _leave_decode(self, rid: int, s: int) -> None:
        ctx = self._ctx(rid, s)
        join_step, target = self.join[rid]
        self._last_phase = (1 - target + join_step) % self.kv.block_tokens
        self.phase_count[self._last_phase] -= 1
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
                    self.table.generated[rid] += s - self.join[rid][0]
                    self.kv.free(self._blocks_held(rid, s))
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
        self.outstanding_list[self.outstanding_index] -= 1

    def _complete_prefill(self, entry: list[int], s: int, now_s: float) -> None:
        rid, _, target = entry
        t = self.table
        t.generated[rid] += 1
        if t.generated[rid] == 1:
            t.first_token_at_s[rid] = now_s
        remaining = t.output_tokens[rid] - t.generated[rid]
        blocks = self.prefill_blocks.pop(rid)
        if remaining <= 0 or self.role == "prefill":   # done, or handed off to a decode replica
            self.kv.free(blocks)
            self._complete(rid, now_s)
            return
        self._join_decode(rid, s, target, remaining)

    def _admit_decoded(self, now_s: float) -> None:
        """Decode role: admit waiting sequences (FCFS) with the blocks of their context, as if their prefill
        had completed at the last step (so the next step's block growth covers them)."""
        t = self.table
        while self.waiting and self.n_dec < self.decode_cap:
            rid = self.waiting[0]
            target = t.input_tokens[rid] + t.generated[rid]
            blocks = self.kv.blocks_for(target) + self.sliding_extra_blocks
            if not self.kv.allocate(blocks):
                return
            self.waiting.popleft()
            if t.generated[rid] == 0:   # the first token came with the hand-off
                t.scheduled_at_s[rid] = max(now_s, t.arrival_at_s[rid])
                t.first_token_at_s[rid] = t.arrival_at_s[rid]
                t.generated[rid] = 1
            remaining = t.output_tokens[rid] - t.generated[rid]
            if remaining <= 0:
                self.kv.free(blocks)
                self._complete(rid, now_s)
                continue
            self._join_decode(rid, self.step, target, remaining)

    def _join_decode(self, rid: int, s: int, target: int, remaining: int) -> None:
        """Sequence ``rid`` (``target`` tokens of context) decodes from step s + 1 and finishes at step
        s + ``remaining``."""
        epoch = self.epoch.get(rid, 0)
        self.decoding[rid] = epoch
        self.join[rid] = (s, target)
        self.n_dec += 1
        self.ctx_sum += target + 1
        self.fin_cal.setdefault(s + remaining, []).append((rid, epoch))
        self.phase_count[(1 - target + s) % self.kv.block_tokens] += 1
        if self.window:
            self.slide_sum += min(target + 1, self.window)
            if target + 1 < self.window:
                self.slide_growing += 1
                self.slide_cal.setdefault(s + self.window - target - 1, []).append((rid, epoch))
