"""The engine scheduler driven directly (no simpy) against an independent model of every sequence.

The test keeps its own account of each request — tokens produced so far and, while it decodes, its
context — from what the engine reports each step (the decode set after planning, the prefill chunks),
and after every ``plan_step`` / ``finish_step`` checks the engine's incremental bookkeeping against it:
KV blocks (never over-allocated, equal to what the live sequences imply, none leaked at the end),
``n_dec``, ``ctx_sum``, ``slide_sum`` (sliding-window context, kept with a calendar), the scheduler
limits, and conservation (arrived = finished + in flight + rejected; every request finishes once,
having produced exactly its ``output_tokens``). Plus property tests of ``KVCache`` alone.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from simulator.deployment import Layout, make_deployment
from simulator.engine import ReplicaEngine, RequestTable
from simulator.iteration import StepModel
from simulator.kv_cache import KVCache

MAX_STEPS = 50_000  # far more than any scenario needs: exceeding it means a livelock


@dataclass(frozen=True)
class Scenario:
    """Requests (arrival step, input tokens, output tokens) and the engine's limits."""

    requests: tuple[tuple[int, int, int], ...]
    block_tokens: int
    capacity_blocks: int
    max_num_seqs: int
    max_batched_tokens: int


@dataclass
class Outcome:
    engine: ReplicaEngine
    table: RequestTable
    steps: int
    preempted_decodes: int
    requeued_prefills: int
    rejected: set[int]


def _blocks(tokens: int, block_tokens: int) -> int:
    return -(-tokens // block_tokens)


def drive(step_model: StepModel, sc: Scenario) -> Outcome:
    """Run the engine over the scenario, checking every invariant after every plan and finish."""
    n = len(sc.requests)
    arrival_step = [r[0] for r in sc.requests]
    table = RequestTable([math.nan] * n, [r[1] for r in sc.requests], [r[2] for r in sc.requests])
    kv = KVCache(sc.capacity_blocks, sc.block_tokens)
    eng = ReplicaEngine(0, step_model, kv, table, max_num_seqs=sc.max_num_seqs,
                        max_batched_tokens=sc.max_batched_tokens)
    block = sc.block_tokens
    model = step_model.deployment.model
    window = model.sliding_window_tokens or 0
    extra = _blocks(window, block) if window and model.kv_elements_per_token_sliding else 0  # per sequence
    assert (eng.window, eng.sliding_extra_blocks) == (window, extra)
    order = sorted(range(n), key=lambda rid: arrival_step[rid])
    produced = [0] * n  # tokens each request has produced (prefill completions + decode steps)
    ctx: dict[int, int] = {}  # decoding rid -> its context at the next step (tokens attended)
    completions = [0] * n
    rejected: set[int] = set()
    arrived = finished = preempted_decodes = requeued_prefills = 0
    now_s, tick, steps, next_arrival = 0.0, 0, 0, 0

    def check_common() -> None:
        assert 0 <= kv.used_blocks <= kv.capacity_blocks
        waiting, prefilling, decoding = list(eng.waiting), [e[0] for e in eng.prefill], list(eng.decoding)
        live = waiting + prefilling + decoding
        assert len(live) == len(set(live)), "a request is in two places at once"
        assert set(prefilling) == set(eng.prefill_blocks)
        assert arrived == finished + len(live) + len(rejected)
        assert eng.outstanding == len(live)
        assert len(prefilling) + len(decoding) <= sc.max_num_seqs
        assert all(math.isnan(table.finish_at_s[rid]) for rid in live)

    while True:
        while next_arrival < n and arrival_step[order[next_arrival]] <= tick:
            rid = order[next_arrival]
            table.arrival_at_s[rid] = now_s
            before = eng.rejected
            eng.enqueue(rid)
            arrived += 1
            next_arrival += 1
            if eng.rejected > before:
                rejected.add(rid)
                need = _blocks(table.input_tokens[rid] + table.output_tokens[rid], block) + extra
                assert need > kv.capacity_blocks
        prefill_entries = {id(e): e[0] for e in eng.prefill}
        decode_order = list(eng.decoding)
        dt = eng.plan_step(now_s)
        for key, rid in prefill_entries.items():
            if all(id(e) != key for e in eng.prefill):  # a stalled prefill gave its blocks back
                assert rid in eng.waiting or any(e[0] == rid and e[1] == 0 for e in eng.prefill)
                requeued_prefills += 1
        if dt is None:
            assert not eng.n_dec and not eng.prefill and not eng.waiting, "idle with work left"
            if next_arrival == n:
                break
            tick = arrival_step[order[next_arrival]]
            continue
        steps += 1
        assert steps < MAX_STEPS, "livelock: the engine keeps stepping without finishing"
        assert dt > 0
        # ---- after planning: the batch of this step
        batch = list(eng.decoding)
        assert batch == decode_order[: len(batch)], "preemption must take the most recent decoders (LIFO)"
        for rid in [r for r in ctx if r not in eng.decoding]:  # preempted by this step's KV growth
            readmitted = any(e[0] == rid and e[1] == 0 for e in eng.prefill)
            assert rid in eng.waiting or readmitted
            del ctx[rid]
            preempted_decodes += 1
        assert set(batch) == set(ctx)
        chunks = [(entry[0], entry[1], c, entry[2]) for entry, c in eng._chunks]
        prefill_tokens = sum(c for _, _, c, _ in chunks)
        assert all(c > 0 for _, _, c, _ in chunks)
        assert prefill_tokens <= max(0, sc.max_batched_tokens - len(batch))
        for rid, done, _, target in chunks:
            if done == 0:  # (re)admitted: recompute the prompt and every token generated so far
                assert target == table.input_tokens[rid] + produced[rid], (
                    f"request {rid} re-prefills {target} tokens but has {table.input_tokens[rid]} prompt "
                    f"tokens and has generated {produced[rid]}: generated tokens were lost at preemption"
                )
        chunk_of = {rid: c for rid, _, c, _ in chunks}
        held = sum(_blocks(e[1] + chunk_of.get(e[0], 0), block) + extra for e in eng.prefill)
        held += sum(_blocks(ctx[rid], block) + extra for rid in batch)
        assert kv.used_blocks == held, "KV blocks differ from what the batch holds"
        assert eng.n_dec == len(batch)
        assert eng.ctx_sum == sum(ctx[rid] for rid in batch)
        if window:
            assert eng.slide_sum == sum(min(ctx[rid], window) for rid in batch)
        check_common()
        # ---- finish the step
        now_s += dt
        eng.finish_step(now_s)
        for rid in batch:
            produced[rid] += 1
        for rid, done, c, target in chunks:
            if done + c >= target:
                produced[rid] += 1
                if produced[rid] == 1:
                    assert table.first_token_at_s[rid] == now_s
                if produced[rid] < table.output_tokens[rid]:
                    ctx[rid] = target + 1
        for rid in batch:
            if produced[rid] < table.output_tokens[rid]:
                ctx[rid] += 1
            else:
                del ctx[rid]
        for rid in [r for r, _, _, _ in chunks] + batch:
            if produced[rid] >= table.output_tokens[rid]:
                assert produced[rid] == table.output_tokens[rid]
                assert table.finish_at_s[rid] == now_s
                completions[rid] += 1
                finished += 1
        assert set(eng.decoding) == set(ctx)
        assert eng.n_dec == len(ctx)
        assert sum(eng.phase_count) == eng.n_dec
        assert eng.ctx_sum == sum(ctx.values())
        if window:
            assert eng.slide_sum == sum(min(v, window) for v in ctx.values())
        used_implied = sum(eng.prefill_blocks.values())
        used_implied += sum(eng._blocks_held(r, eng.step) for r in eng.decoding)
        assert kv.used_blocks == used_implied
        independent = sum(_blocks(e[1], block) + extra for e in eng.prefill)
        independent += sum(_blocks(v - 1, block) + extra for v in ctx.values())
        assert kv.used_blocks == independent
        check_common()
        tick += 1

    assert kv.used_blocks == 0, "KV blocks leaked"
    assert arrived == n
    for rid in range(n):
        if rid in rejected:
            assert completions[rid] == 0 and math.isnan(table.finish_at_s[rid])
        else:
            assert completions[rid] == 1
            assert produced[rid] == table.output_tokens[rid]
            assert table.arrival_at_s[rid] <= table.scheduled_at_s[rid] <= table.first_token_at_s[rid]
            assert table.first_token_at_s[rid] <= table.finish_at_s[rid]
    assert sum(table.preemptions) == preempted_decodes + requeued_prefills
    return Outcome(eng, table, steps, preempted_decodes, requeued_prefills, rejected)


@st.composite
def scenarios(draw, long_tokens: bool = False) -> Scenario:
    max_in, max_out = (300, 200) if long_tokens else (60, 40)
    num = draw(st.integers(1, 10))
    requests = tuple((draw(st.integers(0, 40)), draw(st.integers(1, max_in)), draw(st.integers(1, max_out)))
                     for _ in range(num))
    block = draw(st.sampled_from([1, 2, 3, 16]))
    largest = max(_blocks(i + o, block) for _, i, o in requests) + (_blocks(128, block) if long_tokens else 0)
    capacity = draw(st.integers(max(1, largest * 3 // 4), 2 * largest))  # some rejected, most preempted
    return Scenario(requests, block, capacity, draw(st.integers(1, 8)), draw(st.integers(1, 128)))


@functools.cache
def _model(name: str) -> StepModel:
    """Step models by name, built once (module-level so hypothesis does not print fixtures)."""
    if name == "gpt-oss-120b":
        return StepModel(make_deployment(name, "h100", "fp8", Layout(tp=2)))
    return StepModel(make_deployment(name, "h100", "fp8"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_engine_conserves_requests_tokens_and_kv_blocks(sc):
    """Random arrivals, lengths, block sizes, KV capacities (some requests rejected, many preempted),
    max_num_seqs and token budgets on llama3.1-8b: every invariant after every step."""
    drive(_model("llama3.1-8b"), sc)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(long_tokens=True))
def test_engine_bookkeeping_with_sliding_window_layers(sc):
    """gpt-oss-120b: every sequence also holds a window's worth of blocks for the sliding layers, and
    ``slide_sum`` = sum of min(context, 128) over the decode batch is kept with a calendar."""
    drive(_model("gpt-oss-120b"), sc)


# ----------------------------------------------------------------------------------------------
# Deterministic scenarios that must exercise specific paths
# ----------------------------------------------------------------------------------------------


def test_sliding_window_sum_with_short_and_long_prompts(gpt_oss):
    """Prompts below, at and above the window (128), outputs that carry short ones across it."""
    assert gpt_oss.model.sliding_window_tokens == 128
    requests = ((0, 5, 200), (0, 100, 60), (1, 127, 3), (2, 128, 10), (3, 129, 5), (3, 1000, 50), (5, 60, 69),
                (9, 2000, 2), (10, 1, 300))
    out = drive(StepModel(gpt_oss), Scenario(requests, 16, 100_000, 16, 512))
    assert out.preempted_decodes == 0 and not out.rejected
    assert out.engine.slide_sum == 0 and out.engine.ctx_sum == 0


def test_scarce_kv_forces_decode_preemptions_and_every_request_still_completes(llama8b):
    """Four sequences of 20 + 40 tokens need 16 blocks at the end but only 10 exist: the most recently
    admitted are preempted (LIFO), recomputed, and every request still produces all its tokens."""
    requests = tuple((0, 20, 40) for _ in range(4))
    out = drive(StepModel(llama8b), Scenario(requests, 16, 10, 4, 64))
    assert out.preempted_decodes > 0
    assert sum(out.table.preemptions) >= out.preempted_decodes
    assert not out.rejected


def test_scarce_kv_with_sliding_window_allowance(gpt_oss):
    """Preemption with the per-sequence sliding-window allowance (8 blocks of 16 for a 128 window)."""
    requests = tuple((k, 90 + 7 * k, 80) for k in range(6))
    extra = _blocks(128, 16)
    out = drive(StepModel(gpt_oss), Scenario(requests, 16, 3 * (extra + _blocks(170, 16)), 6, 256))
    assert out.preempted_decodes > 0 and not out.rejected


def test_generated_counts_every_output_token(llama8b):
    """``RequestTable.generated`` is what a preempted sequence recomputes (prompt + generated tokens), so
    it must count decode tokens too, not only the token each prefill produces: once a request finishes
    it equals ``output_tokens``, preempted or not (ample KV first, then 10 blocks for 16 blocks' worth)."""
    for requests, capacity_blocks in ((((20, 5), (7, 1), (30, 17)), 100), (((20, 40),) * 4, 10)):
        n = len(requests)
        table = RequestTable([0.0] * n, [r[0] for r in requests], [r[1] for r in requests])
        eng = ReplicaEngine(0, StepModel(llama8b), KVCache(capacity_blocks, 16), table, max_num_seqs=4,
                            max_batched_tokens=64)
        for rid in range(n):
            eng.enqueue(rid)
        now_s = 0.0
        while (dt := eng.plan_step(now_s)) is not None:
            now_s += dt
            eng.finish_step(now_s)
        assert not any(math.isnan(t) for t in table.finish_at_s)
        assert table.generated == table.output_tokens


def test_request_that_can_never_fit_is_rejected_and_counted(llama8b):
    out = drive(StepModel(llama8b), Scenario(((0, 100, 100), (0, 10, 5)), 16, 8, 4, 64))
    assert out.rejected == {0}
    assert out.engine.rejected == 1


# ----------------------------------------------------------------------------------------------
# KVCache alone
# ----------------------------------------------------------------------------------------------


@given(capacity=st.integers(0, 1000), block=st.integers(1, 64), tokens=st.integers(0, 100_000))
def test_blocks_for_is_the_ceiling(capacity, block, tokens):
    kv = KVCache(capacity, block)
    b = kv.blocks_for(tokens)
    if tokens == 0:
        assert b == 0
    else:
        assert (b - 1) * block < tokens <= b * block


class KVCacheMachine(RuleBasedStateMachine):
    """Random allocate/free sequences against a model counter: never over-commits, never under-frees."""

    def __init__(self) -> None:
        super().__init__()
        self.kv: KVCache | None = None
        self.used = 0

    @precondition(lambda self: self.kv is None)
    @rule(capacity=st.integers(0, 64), block=st.integers(1, 32))
    def create(self, capacity, block):
        self.kv = KVCache(capacity, block)
        self.used = 0

    @precondition(lambda self: self.kv is not None)
    @rule(blocks=st.integers(0, 80))
    def allocate(self, blocks):
        ok = self.kv.allocate(blocks)
        assert ok == (self.used + blocks <= self.kv.capacity_blocks)
        if ok:
            self.used += blocks

    @precondition(lambda self: self.kv is not None)
    @rule(blocks=st.integers(0, 80))
    def free(self, blocks):
        if blocks > self.used:
            with pytest.raises(ValueError):
                self.kv.free(blocks)
        else:
            self.kv.free(blocks)
            self.used -= blocks

    @precondition(lambda self: self.kv is not None)
    @rule(blocks=st.integers(-5, -1))
    def negative_requests_are_refused(self, blocks):
        with pytest.raises(ValueError):
            self.kv.allocate(blocks)
        with pytest.raises(ValueError):
            self.kv.free(blocks)

    @invariant()
    def counts_agree(self):
        if self.kv is not None:
            assert self.kv.used_blocks == self.used
            assert 0 <= self.kv.used_blocks <= self.kv.capacity_blocks
            assert self.kv.free_blocks == self.kv.capacity_blocks - self.used
            assert 0.0 <= self.kv.occupancy_frac <= 1.0


TestKVCache = KVCacheMachine.TestCase
TestKVCache.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
