"""Disaggregated prefill/decode serving: the engine's prefill and decode roles (closed forms with a fixed
step time, conservation under scarce KV), and the replay's split of a system into prefill and decode
replicas (``simulator.disaggregation``)."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import disaggregation, mlperf, replay
from simulator.engine import ReplicaEngine, RequestTable
from simulator.iteration import StepModel
from simulator.kv_cache import KVCache
from tests.conftest import FixedStepModel

STEP_S = 0.01


def _run(model: StepModel, requests: list[tuple[float, int, int]], role: str, *,
         capacity_blocks: int = 100_000, max_num_seqs: int = 64,
         max_batched_tokens: int = 64) -> tuple[ReplicaEngine, RequestTable, int]:
    """Drive one engine over (arrival_s, input, output) requests; checks KV bounds every step. Returns
    (engine, table, prefill tokens it computed)."""
    table = RequestTable([r[0] for r in requests], [r[1] for r in requests], [r[2] for r in requests])
    kv = KVCache(capacity_blocks, 16)
    eng = ReplicaEngine(0, model, kv, table, max_num_seqs=max_num_seqs, max_batched_tokens=max_batched_tokens,
                        role=role)
    order = sorted(range(len(requests)), key=lambda i: requests[i][0])
    now_s, nxt, prefilled = 0.0, 0, 0
    for _ in range(100_000):
        while nxt < len(order) and requests[order[nxt]][0] <= now_s:
            eng.enqueue(order[nxt])
            nxt += 1
        dt = eng.plan_step(now_s)
        if dt is None:
            if nxt == len(order):
                break
            now_s = requests[order[nxt]][0]
            continue
        assert 0 <= kv.used_blocks <= kv.capacity_blocks
        prefilled += sum(c for _, c in eng._chunks)
        now_s += dt
        eng.finish_step(now_s)
    assert kv.used_blocks == 0, "KV blocks leaked"
    return eng, table, prefilled


def test_decode_role_decodes_from_the_hand_off_with_no_prefill_work(llama8b):
    """Requests handed off at t = 0 with outputs 2..6: the first token counts at the hand-off, each later
    token takes one step, so request i finishes at (output - 1) x step and its TPOT is exactly the step."""
    reqs = [(0.0, 100 + 7 * i, 2 + i) for i in range(5)]
    _, table, prefilled = _run(FixedStepModel(llama8b, STEP_S), reqs, "decode")
    assert prefilled == 0
    for rid, (_, _, out) in enumerate(reqs):
        assert table.first_token_at_s[rid] == 0.0 and table.generated[rid] == out
        assert math.isclose(table.finish_at_s[rid], (out - 1) * STEP_S)
        assert math.isclose((table.finish_at_s[rid] - table.first_token_at_s[rid]) / (out - 1), STEP_S)


def test_decode_role_waiting_for_a_slot_shows_in_tpot(llama8b):
    """One decode slot, two hand-offs at t = 0 (outputs 3 and 5): the second starts when the first ends
    (2 steps) and finishes after 4 more, so its TPOT is 6 steps / 4 tokens."""
    _, table, _ = _run(FixedStepModel(llama8b, STEP_S), [(0.0, 50, 3), (0.0, 50, 5)], "decode",
                       max_num_seqs=1)
    assert math.isclose(table.finish_at_s[0], 2 * STEP_S) and math.isclose(table.finish_at_s[1], 6 * STEP_S)
    assert math.isclose((table.finish_at_s[1] - table.first_token_at_s[1]) / 4, 1.5 * STEP_S)


def test_prefill_role_hands_off_at_the_first_token(llama8b):
    """A 100-token prompt in 64-token chunks takes 2 steps; the request leaves the prefill replica with its
    first token (finish = first token), its blocks freed, and nothing ever decodes there."""
    eng, table, prefilled = _run(FixedStepModel(llama8b, STEP_S), [(0.0, 100, 50), (0.0, 20, 9)], "prefill")
    assert prefilled == 120 and eng.n_dec == 0
    assert math.isclose(table.first_token_at_s[0], 2 * STEP_S)
    assert table.finish_at_s == table.first_token_at_s and table.generated == [1, 1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 200), st.integers(1, 120)), min_size=1,
                     max_size=12),
       capacity=st.integers(20, 60), seqs=st.integers(1, 8))
def test_decode_role_conserves_tokens_under_scarce_kv(llama8b, reqs, capacity, seqs):
    """Random hand-offs on a scarce KV cache (preemptions): every request that fits finishes once with all
    its output tokens, and no block leaks (checked by ``_run``)."""
    requests = [(0.001 * a, i, o) for a, i, o in reqs]
    eng, table, prefilled = _run(StepModel(llama8b), requests, "decode", capacity_blocks=capacity,
                                 max_num_seqs=seqs)
    assert prefilled == 0
    done = [rid for rid in range(len(requests)) if not math.isnan(table.finish_at_s[rid])]
    assert len(done) + eng.rejected == len(requests)
    assert all(table.generated[rid] == table.output_tokens[rid] for rid in done)


# ----------------------------------------------------------------------------------------------
# The split of a part into prefill and decode replicas
# ----------------------------------------------------------------------------------------------


def test_balance_by_hand():
    """72 GPUs, prefill replicas of 4 GPUs at 1 req/s, decode of 8 at 3 req/s: (10, 4) sustains 10 req/s
    (6 decode: 6 prefill fit, 6; 3 decode: 12 prefill but 9; 5 decode: 8). One of each must fit."""
    assert disaggregation.balance(72, 4, 8, 1.0, 3.0) == (10, 4)
    assert disaggregation.balance(8, 4, 8, 1.0, 3.0) == (0, 0)
    assert disaggregation.balance(16, 8, 8, 1.0, 0.0) == (0, 0)


@given(gpus=st.integers(2, 80), gp=st.sampled_from([1, 2, 4, 8]), gd=st.sampled_from([1, 2, 4, 8]),
       rp=st.floats(0.01, 100.0), rd=st.floats(0.01, 100.0))
def test_balance_is_the_best_whole_split(gpus, gp, gd, rp, rd):
    """Against brute force over every (n_p, n_d) that fits: the same best rate, within the GPUs."""
    n_p, n_d = disaggregation.balance(gpus, gp, gd, rp, rd)
    pairs = [(a, b) for a in range(1, gpus + 1) for b in range(1, gpus + 1) if a * gp + b * gd <= gpus]
    if not pairs:
        assert (n_p, n_d) == (0, 0)
        return
    best = max(min(a * rp, b * rd) for a, b in pairs)
    assert n_p * gp + n_d * gd <= gpus and n_p >= 1 and n_d >= 1
    assert math.isclose(min(n_p * rp, n_d * rd), best, rel_tol=1e-9)


def _key(model: str, scenario: str, acc: str, gpus: int) -> tuple[replay.PartKey, int]:
    rows = mlperf.deduplicate(mlperf.load_results())
    for r in rows:
        spec = mlperf.replay_spec(r)
        if (not isinstance(spec, mlperf.Unsupported) and spec.model_id == model and r.scenario == scenario
                and r.accelerator == acc and r.total_accelerators == gpus and len(spec.parts) == 1):
            return replay.part_keys(spec)[0]
    raise AssertionError(f"no {model} {scenario} row on {gpus} {acc}")


def test_decode_only_replica_outruns_its_aggregated_twin():
    """Taking the prefill out of the steps never lowers what a layout decodes under the same TPOT limit:
    for every layout of llama3.1-405b Interactive on an NVL72 rack, the decode-only rate (tokens/s) is at
    least the aggregated fast rate; without a TTFT limit a prefill replica runs its chunks at the planned
    utilisation cap (closed form)."""
    key, _ = _key("llama3.1-405b", "Interactive", "GB200", 72)
    lens = replay.lengths(key.model_id)
    for dep, plan, model in replay._calibrated(key, None):
        started = replay._fast_start(dep, plan, lens, model)
        aggregated, _ = replay._fast_finish(started, key, lens)
        decode = disaggregation.decode_rate_per_s(model, dep, plan, lens, key.tpot_limit_s)
        assert decode * lens.mean_output >= aggregated * (1 - 1e-9)
        chunk = dep.max_batched_tokens
        expect = (disaggregation.PREFILL_UTILISATION_MAX * chunk
                  / replay._step_time_s(model, dep, 0.0, lens, chunk) / lens.mean_input)
        assert math.isclose(disaggregation.prefill_rate_per_s(model, dep, lens, None), expect)
        assert disaggregation.prefill_rate_per_s(model, dep, lens, 1e-6) == 0.0   # p99 prompt alone too slow


def test_replay_splits_only_where_it_pays_and_fits():
    """llama3.1-405b Interactive: on an NVL72 rack the replay splits (it beats aggregated serving, and the
    replicas fit in the 72 GPUs); an 8-GPU box and an Offline run never split (``replay.splits``)."""
    key, count = _key("llama3.1-405b", "Interactive", "GB200", 72)
    part = replay.predict_part(key, count, None, mode="fast")
    split = part["disaggregated"]
    assert part["layout"].startswith("disagg")
    lay = {name: int(split[f"{name}_layout"].split()[0][2:]) for name in ("prefill", "decode")}
    assert split["prefill_replicas"] * lay["prefill"] + split["decode_replicas"] * lay["decode"] <= count
    aggregated = replay.best_layout(key, None)
    assert part["tokens_per_s"] > aggregated[2] * (count // aggregated[0].layout.gpus)
    key8, count8 = _key("llama3.1-405b", "Interactive", "B200", 8)
    assert "disaggregated" not in replay.predict_part(key8, count8, None, mode="fast")
    key_off, count_off = _key("llama3.1-405b", "Offline", "GB200", 72)
    assert "disaggregated" not in replay.predict_part(key_off, count_off, None, mode="fast")


def test_split_deployments_carry_the_calibration_they_were_priced_with():
    """The split's deployments (which full mode simulates) carry the efficiency of the calibration passed in,
    not the shipped file's: a CV fold must never simulate with a fit that saw its held-out rows."""
    key, _ = _key("llama3.1-405b", "Interactive", "GB200", 72)
    lens = replay.lengths(key.model_id)
    fold: dict = {}   # no fitted group: every layout falls back to the default efficiency
    for rates in disaggregation.role_rates(replay._calibrated(key, fold), lens, key.ttft_limit_s,
                                           key.tpot_limit_s):
        assert rates
        for dep, _, _ in rates:
            assert dep.efficiency == replay.efficiency_for(key.accelerator_id, dep.compute_family,
                                                           dep.framework, fold)
    shipped = replay.efficiency_for(key.accelerator_id, rates[0][0].compute_family, key.framework, None)
    assert shipped != rates[0][0].efficiency   # the test would not see a leak otherwise


def test_full_split_balances_the_best_pair_on_simulated_rates(monkeypatch):
    """Full mode simulates the split's own layouts and the others of each role, then keeps the pair with the
    highest balanced rate on the simulated rates: here the fast choice simulates worst in both roles."""
    key, count = _key("llama3.1-405b", "Interactive", "GB200", 72)
    lens = replay.lengths(key.model_id)
    fast = replay.predict_part(key, count, {}, mode="fast")["disaggregated"]
    chosen = {"prefill": fast["prefill_layout"], "decode": fast["decode_layout"]}

    def fake_run(role, dep, *args, **kwargs):   # per GPU: the fast choice 1, TP8 3, the rest 2 req/s
        label = dep.layout.label()
        per_gpu = 1.0 if label == chosen[role] else 3.0 if label == "TP8" else 2.0
        return {"rate_per_s": per_gpu * dep.layout.gpus}

    monkeypatch.setattr(replay, "_role_run", fake_run)
    part = replay.predict_part(key, count, {}, mode="full")
    split = part["disaggregated"]
    assert chosen != {"prefill": "TP8", "decode": "TP8"}   # else the fake could not tell the pairs apart
    assert (split["prefill_layout"], split["decode_layout"]) == ("TP8", "TP8")
    n_p, n_d = split["prefill_replicas"], split["decode_replicas"]
    assert (n_p + n_d) * 8 <= count
    assert math.isclose(part["tokens_per_s"], min(n_p, n_d) * 24.0 * lens.mean_output)
    assert (n_p, n_d) == disaggregation.balance(count, 8, 8, 24.0, 24.0)
