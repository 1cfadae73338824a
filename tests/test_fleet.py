"""End-to-end runs of ``simulate``: closed forms for a lone request and a saturated decode batch,
determinism, monotonicity in the number of replicas, preemption under scarce KV, saturation flags,
and conservation of requests on every run."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from simulator.deployment import make_deployment, plan_memory
from simulator.fleet import ReplicaGroup, RunResult, simulate
from simulator.iteration import StepModel, prefill_pairs
from simulator.workload import LogNormalLength, PoissonArrivals, RequestSet, Workload

RECORD_FIELDS = ("arrival_at_s", "first_token_at_s", "finish_at_s", "input_tokens", "output_tokens",
                 "preemptions", "replica", "scheduled_at_s")


def check_run(result: RunResult, *, drained: bool = True) -> None:
    """Conservation and causality on one run: arrived = finished + in flight + rejected (in flight = 0
    once drained); timestamps ordered arrival <= scheduled <= first token <= finish."""
    r = result.records
    n = len(r)
    finished = int(np.sum(~np.isnan(r.finish_at_s)))
    in_flight = n - finished - result.rejected
    assert in_flight >= 0
    if drained:
        assert in_flight == 0, f"{in_flight} requests neither finished nor rejected"
    assert np.all(np.isnan(r.finish_at_s) | ~np.isnan(r.first_token_at_s))  # finished => had a first token
    done = ~np.isnan(r.finish_at_s)
    slack = 1e-9
    assert np.all(r.scheduled_at_s[done] >= r.arrival_at_s[done] - slack)
    assert np.all(r.first_token_at_s[done] > r.scheduled_at_s[done])
    assert np.all(r.finish_at_s[done] >= r.first_token_at_s[done])
    single = done & (r.output_tokens == 1)
    assert np.all(r.finish_at_s[single] == r.first_token_at_s[single])
    assert np.all(r.preemptions >= 0)
    arrived = r.arrival_at_s <= result.end_at_s  # a run with a cool-down stops before its last arrivals
    assert np.all((r.replica[arrived] >= 0) & (r.replica[arrived] < result.num_replicas))
    assert result.end_at_s >= np.nanmax(r.finish_at_s, initial=0.0)


def _one(arrival_at_s: float, input_tokens: int, output_tokens: int) -> RequestSet:
    return RequestSet(np.array([arrival_at_s]), np.array([input_tokens]), np.array([output_tokens]))


def _workload(rate_per_s: float, input_mean: float = 512, output_mean: float = 128) -> Workload:
    return Workload(
        arrivals=PoissonArrivals(rate_per_s=rate_per_s),
        input_tokens=LogNormalLength(mean_tokens=input_mean, cv=1.0, max_tokens=4096),
        output_tokens=LogNormalLength(mean_tokens=output_mean, cv=1.0, max_tokens=1024),
    )


def _requests(rate_per_s: float, duration_s: float, seed: int, **kw) -> RequestSet:
    rng_a, rng_l = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return _workload(rate_per_s, **kw).generate(duration_s, rng_a, rng_l)


# ----------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["llama8b", "gpt_oss"])
@pytest.mark.parametrize(("input_tokens", "output_tokens"), [(1, 1), (700, 1), (700, 300), (20_000, 40)])
def test_lone_request_ttft_and_e2e_closed_form(request, which, input_tokens, output_tokens):
    """Alone, TTFT = prefill time (in chunks of max_batched_tokens, one step each) and
    E2E = TTFT + sum over k = 1..n-1 of a 1-sequence decode step at context input + k."""
    dep = request.getfixturevalue(which)
    model = StepModel(dep)
    result = simulate(dep, _one(0.25, input_tokens, output_tokens))
    check_run(result)
    r = result.records
    ttft = float(r.first_token_at_s[0] - r.arrival_at_s[0])
    e2e = float(r.finish_at_s[0] - r.arrival_at_s[0])
    assert float(r.scheduled_at_s[0]) == pytest.approx(0.25, abs=1e-12)  # an idle replica starts at once
    assert ttft == pytest.approx(model.prefill_time_s(input_tokens), rel=1e-9)
    decode = sum(model.time_of(model.decode_shape(1, input_tokens + k)) for k in range(1, output_tokens))
    assert e2e - ttft == pytest.approx(decode, rel=1e-9, abs=1e-12)
    assert result.steps == math.ceil(input_tokens / dep.max_batched_tokens) + output_tokens - 1


def test_saturated_decode_throughput_is_batch_over_step_time():
    """N identical requests at t = 0 with ample KV: one prefill step for all, then N sequences decode in
    lockstep, so the decode-phase token rate is N / (step time at the mean context)."""
    n_seqs, prompt, out = 64, 128, 257
    dep = make_deployment("llama3.1-8b", "h100", "fp8", max_num_seqs=n_seqs)
    assert n_seqs * (prompt + out) < plan_memory(dep).kv_capacity_tokens  # no preemption
    model = StepModel(dep)
    requests = RequestSet(np.zeros(n_seqs), np.full(n_seqs, prompt), np.full(n_seqs, out))
    result = simulate(dep, requests, offline=True)
    check_run(result)
    r = result.records
    assert np.ptp(r.first_token_at_s) == 0 and np.ptp(r.finish_at_s) == 0  # lockstep
    prefill_step = model.step_time_s(n_seqs * prompt, n_seqs * prefill_pairs(prompt, 0), 0.0, 0, 0.0, 0.0)
    assert float(r.first_token_at_s[0]) == pytest.approx(prefill_step, rel=1e-9)
    decode_rate = n_seqs * (out - 1) / float(r.finish_at_s[0] - r.first_token_at_s[0])
    mean_context = prompt + out / 2
    expected = n_seqs / model.time_of(model.decode_shape(n_seqs, mean_context))
    assert decode_rate == pytest.approx(expected, rel=0.01)
    assert result.summary().preemptions == 0


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("router", ["random", "least-outstanding", "power-of-two"])
def test_same_inputs_and_seed_give_identical_records(llama8b, router):
    requests = _requests(120.0, 20.0, seed=5)
    a = simulate(llama8b, requests, num_replicas=3, router=router, seed=9)
    b = simulate(llama8b, requests, num_replicas=3, router=router, seed=9)
    check_run(a)
    for name in RECORD_FIELDS:
        np.testing.assert_array_equal(getattr(a.records, name), getattr(b.records, name), err_msg=name)
    assert a.end_at_s == b.end_at_s and a.steps == b.steps and a.busy_s == b.busy_s


def test_random_router_seed_changes_the_assignment(llama8b):
    requests = _requests(120.0, 20.0, seed=5)
    a = simulate(llama8b, requests, num_replicas=3, router="random", seed=1)
    b = simulate(llama8b, requests, num_replicas=3, router="random", seed=2)
    check_run(a)
    check_run(b)
    assert not np.array_equal(a.records.replica, b.records.replica)
    assert not np.array_equal(a.records.finish_at_s, b.records.finish_at_s)


@pytest.mark.parametrize("router", ["least-outstanding", "power-of-two", "round-robin", "random"])
def test_last_arrival_on_a_monitor_tick_is_still_served(llama8b_batch1, stub_models, router):
    """The monitor ticks every duration/200 s, so its last tick falls on the last arrival (t = 200 here,
    ticks at whole seconds). The run must not stop there before a router process has delivered that
    arrival: every request is served whatever the router."""
    fixed, _ = stub_models
    ones = np.ones(3, dtype=np.int64)
    requests = RequestSet(np.array([0.5, 199.5, 200.0]), ones, ones)
    result = simulate([ReplicaGroup(llama8b_batch1, 1, fixed(llama8b_batch1, 0.01))], requests, router=router)
    check_run(result)
    np.testing.assert_allclose(result.records.finish_at_s, requests.arrival_at_s + 0.01)


# ----------------------------------------------------------------------------------------------
# Monotonicity and preemption
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("router", ["least-outstanding", "random"])
def test_more_replicas_never_worsen_mean_ttft(llama8b, router):
    """Same request stream (common random numbers), 2..5 replicas: mean TTFT does not rise beyond a
    small noise allowance (5%) as replicas are added; from 2 to 5 it falls clearly."""
    requests = _requests(70.0, 30.0, seed=3)
    ttft = []
    for count in (2, 3, 4, 5):
        result = simulate(llama8b, requests, num_replicas=count, router=router, seed=4, warmup_s=5.0)
        check_run(result)
        summary = result.summary()
        assert not summary.saturated
        ttft.append(summary.ttft_s.mean.value)
    for fewer, more in itertools.pairwise(ttft):
        assert more <= fewer * 1.05, f"mean TTFT rose from {fewer:.4f} s to {more:.4f} s: {ttft}"
    assert ttft[-1] < ttft[0]


def test_scarce_kv_preempts_and_still_completes_every_request():
    """llama2-70b fp8 on one H100 leaves ~48k tokens of KV: 150 requests of ~1000 + ~600 tokens at once
    cannot all fit, so decoding sequences are preempted and recomputed; every request still finishes."""
    dep = make_deployment("llama2-70b", "h100", "fp8", max_num_seqs=256)
    capacity_tokens = plan_memory(dep).kv_capacity_tokens
    requests = _requests(1000.0, 0.15, seed=8, input_mean=1000, output_mean=600)
    offline = RequestSet(np.zeros(len(requests)), requests.input_tokens, requests.output_tokens)
    assert int(np.sum(requests.input_tokens + requests.output_tokens)) > 2 * capacity_tokens
    result = simulate(dep, offline, offline=True)
    check_run(result)
    s = result.summary()
    assert s.preemptions > 0
    assert s.completed_requests + result.rejected == s.arrived_requests == len(requests)


# ----------------------------------------------------------------------------------------------
# Saturation
# ----------------------------------------------------------------------------------------------


def test_batch1_fleet_flags_saturation_at_twice_capacity_not_at_light_load(llama8b_batch1, stub_models,
                                                                          poisson_requests):
    """Batch size 1 and a fixed 10 ms step: capacity is exactly 100 requests/s per replica."""
    fixed, _ = stub_models
    service_s, replicas = 0.01, 2
    capacity = replicas / service_s
    for load, expect in ((2.0, True), (0.3, False)):
        requests = poisson_requests(load * capacity, int(load * capacity * 60), np.random.default_rng(21))
        group = ReplicaGroup(llama8b_batch1, replicas, fixed(llama8b_batch1, service_s))
        result = simulate([group], requests, router="round-robin", warmup_s=10.0, drain_limit_s=5.0)
        check_run(result, drained=not expect)
        summary = result.summary()
        assert summary.saturated is expect, summary.saturation_reason
        if expect:
            assert math.isnan(summary.ttft_s.p99.value)
            assert summary.steady_output_tokens_per_s == pytest.approx(capacity, rel=0.05)


def test_real_fleet_flags_saturation_at_twice_its_offline_capacity(llama8b):
    """Capacity measured as an offline run's request throughput; 2x that is saturated, 0.25x is not."""
    probe = _requests(1000.0, 2.0, seed=13)
    offline = simulate(llama8b, RequestSet(np.zeros(len(probe)), probe.input_tokens, probe.output_tokens),
                       offline=True)
    check_run(offline)
    capacity_per_s = len(probe) / offline.end_at_s
    for load, expect in ((2.0, True), (0.25, False)):
        requests = _requests(load * capacity_per_s, 40.0, seed=14)
        result = simulate(llama8b, requests, warmup_s=5.0, drain_limit_s=10.0 if expect else None)
        check_run(result, drained=not expect)
        summary = result.summary()
        assert summary.saturated is expect, (load, summary.saturation_reason)


# ----------------------------------------------------------------------------------------------
# Cool-down: arrivals after the measurement window
# ----------------------------------------------------------------------------------------------


def _window_and_cooldown(rate_per_s: float, window_end_s: float, cooldown_s: float) -> tuple[RequestSet, int]:
    """Requests over window + cool-down, and how many arrive in the window."""
    requests = _requests(rate_per_s, window_end_s + cooldown_s, seed=5)
    return requests, int(np.searchsorted(requests.arrival_at_s, window_end_s))


def test_cooldown_keeps_the_load_on_until_the_window_has_finished_then_stops(llama8b):
    """Every request of the window finishes while requests still arrive; the run then stops within one
    monitor interval (window / 200) without draining the cool-down's own requests."""
    window_end_s = 20.0
    requests, n = _window_and_cooldown(80.0, window_end_s, cooldown_s=40.0)
    result = simulate(llama8b, requests, num_replicas=2, duration_s=window_end_s, warmup_s=4.0)
    check_run(result, drained=False)
    finish = result.records.finish_at_s
    assert not np.isnan(finish[:n]).any()
    last_window_finish_s = float(finish[:n].max())
    assert last_window_finish_s < requests.arrival_at_s[-1]
    assert result.end_at_s <= last_window_finish_s + window_end_s / 200 + 1e-9
    assert np.isnan(finish[n:]).any()


@pytest.mark.parametrize(("rate_per_s", "least_rise"), [(80.0, 1.05), (120.0, 1.2)])
def test_cooldown_only_slows_the_window_and_most_its_last_requests(llama8b, rate_per_s, least_rise):
    """Same window arrivals with and without a cool-down: extra later arrivals can only lengthen steps,
    so no window request's TPOT drops (pathwise), and the last tenth of the window, which without a
    cool-down decodes in the drain with a shrinking batch, slows by more than ``least_rise``."""
    window_end_s = 20.0
    requests, n = _window_and_cooldown(rate_per_s, window_end_s, cooldown_s=10.0)
    window_only = RequestSet(requests.arrival_at_s[:n], requests.input_tokens[:n], requests.output_tokens[:n])
    with_cd = simulate(llama8b, requests, num_replicas=2, duration_s=window_end_s, warmup_s=4.0)
    drained = simulate(llama8b, window_only, num_replicas=2, duration_s=window_end_s, warmup_s=4.0)
    multi = requests.output_tokens[:n] > 1
    loaded, drain = with_cd.records.tpot_s()[:n][multi], drained.records.tpot_s()[:n][multi]
    assert np.all(loaded >= drain * (1 - 1e-12))
    tail = len(loaded) // 10
    assert loaded[-tail:].mean() > least_rise * drain[-tail:].mean()
