"""The serving simulation against queueing theory.

With batch size 1 (``max_num_seqs=1``), one output token per request (its prefill is its only step)
and a stub step model, a replica is a single FIFO server whose service time is one step: fixed
(M/D/1) or exponential (M/M/1). We check, per request, that the simulated timestamps follow the
Lindley recursion exactly (start = max(arrival, previous finish)), and, over seeded replications
(warm-up discarded), that mean waits and sojourns match the closed forms within 3 standard errors:

    M/D/1  Wq = rho / (2 mu (1 - rho))        M/M/1  W = 1 / (mu - lambda)

and that c replicas behind the random router are c independent M/M/1 queues at lambda / c.
Little's law is checked on every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from simulator.fleet import ReplicaGroup, RunResult, simulate

SERVICE_S = 1.0  # mean service time 1/mu (s)
RHO = 0.7
NUM_REPLICATIONS = 20
NUM_REQUESTS = 20_000
WARMUP_FRAC = 0.1
Z_TOLERANCE = 3.0  # standard errors
FLOAT_SLACK_S = 1e-9
MAX_REL_SE = 0.05  # a replication set too noisy to tell theory from a 15% error is a failed test too


@dataclass(frozen=True)
class RunStats:
    """Means over the requests arriving after the warm-up of one run (s, requests)."""

    wait_s: float
    sojourn_s: float
    number_in_system: float
    waiting_monitor: float
    arrival_rate_per_s: float


def _run(dep, step_model, requests, *, num_replicas: int = 1, router: str = "random",
         seed: int = 0) -> RunResult:
    warmup_s = float(requests.arrival_at_s[int(WARMUP_FRAC * len(requests))])
    return simulate([ReplicaGroup(dep, num_replicas, step_model)], requests, router=router, seed=seed,
                    warmup_s=warmup_s)


def _lindley_starts(arrival_at_s: np.ndarray, service_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and finish instants of a single FIFO server: start_i = max(a_i, finish_{i-1})."""
    start, finish = np.empty_like(arrival_at_s), np.empty_like(arrival_at_s)
    free_at_s = -math.inf
    for i, (a, s) in enumerate(zip(arrival_at_s.tolist(), service_s.tolist(), strict=True)):
        start[i] = max(a, free_at_s)
        free_at_s = finish[i] = start[i] + s
    return start, finish


def _assert_conservation(result: RunResult) -> None:
    """Every request arrived, was scheduled once, finished after it started; nothing rejected."""
    r = result.records
    assert result.rejected == 0
    assert not np.isnan(r.finish_at_s).any(), "a request never finished"
    assert np.all(r.scheduled_at_s >= r.arrival_at_s - FLOAT_SLACK_S)  # clock arithmetic: now + (a - now)
    assert np.all(r.first_token_at_s >= r.scheduled_at_s)
    assert np.array_equal(r.first_token_at_s, r.finish_at_s)  # one output token: first token = finish
    assert np.all(r.preemptions == 0)


def _assert_little(result: RunResult) -> float:
    """Little's law on the window [warm-up, last arrival]: the time-average number in system (from the
    arrival/finish step function) equals lambda x mean sojourn of the window's arrivals, up to the edge
    terms (time spent outside the window by requests straddling its ends), which must be small.
    Also: time in service from the records (over [0, duration]) matches the busy time the run reports,
    up to 1% of the run (the monitor samples the engines' busy time about 200 times). Returns L."""
    r = result.records
    a, c = r.arrival_at_s, r.finish_at_s
    t0, t1 = result.warmup_s, float(a[-1])
    times = np.concatenate((a, c))
    steps = np.concatenate((np.ones_like(a), -np.ones_like(c)))
    order = np.argsort(times, kind="stable")
    times, counts = times[order], np.cumsum(steps[order])
    inside = (times > t0) & (times < t1)
    knots = np.concatenate(([t0], times[inside], [t1]))
    level = np.concatenate(([np.sum((a <= t0) & (c > t0))], counts[inside]))
    number_in_system = float(np.dot(level, np.diff(knots))) / (t1 - t0)
    in_window = (a >= t0) & (a < t1)
    arrival_rate = float(in_window.sum()) / (t1 - t0)
    sojourn = float(np.mean((c - a)[in_window]))
    before = (a < t0) & (c > t0)
    after = in_window & (c > t1)
    edge = max(float(np.sum(c[before] - t0)), float(np.sum(c[after] - t1))) / (t1 - t0)
    assert edge < 0.01 * number_in_system, "window too short for Little's law"
    assert abs(number_in_system - arrival_rate * sojourn) <= edge + 1e-9 * number_in_system
    until_s = result.duration_s
    busy_from_records = float(np.sum(np.clip(c, None, until_s) - np.clip(r.scheduled_at_s, None, until_s)))
    assert abs(busy_from_records - result.busy_s) <= 0.01 * until_s * result.num_replicas
    return number_in_system


def _stats(result: RunResult) -> RunStats:
    r = result.records
    measured = r.arrival_at_s >= result.warmup_s
    number_in_system = _assert_little(result)
    return RunStats(
        wait_s=float(np.mean((r.scheduled_at_s - r.arrival_at_s)[measured])),
        sojourn_s=float(np.mean((r.finish_at_s - r.arrival_at_s)[measured])),
        number_in_system=number_in_system,
        waiting_monitor=result.summary().num_waiting_mean,
        arrival_rate_per_s=float(measured.sum()) / float(r.arrival_at_s[-1] - result.warmup_s),
    )


def _assert_matches(values: list[float], theory: float, what: str) -> None:
    x = np.asarray(values)
    mean, se = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(len(x))
    assert se < MAX_REL_SE * theory, f"{what}: too noisy to test (se {se:.4g} vs theory {theory:.4g})"
    assert abs(mean - theory) < Z_TOLERANCE * se, (
        f"{what}: simulated {mean:.4f} +- {se:.4f} (1 se) vs theory {theory:.4f} "
        f"({(mean - theory) / se:+.1f} se over {len(x)} replications)"
    )


# ----------------------------------------------------------------------------------------------
# Exact single-server FIFO behaviour (per request, no statistics)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("router", ["random", "least-outstanding"])
def test_batch1_replica_is_an_exact_fifo_single_server_md1(llama8b_batch1, stub_models, poisson_requests,
                                                           router):
    """Pre-routed arrivals (pulled at step boundaries) and pushed arrivals (the router process wakes
    an idle replica) both give start = max(arrival, previous finish): no lost or added time."""
    fixed, _ = stub_models
    requests = poisson_requests(RHO / SERVICE_S, 3000, np.random.default_rng(11))
    result = _run(llama8b_batch1, fixed(llama8b_batch1, SERVICE_S), requests, router=router)
    _assert_conservation(result)
    start, finish = _lindley_starts(requests.arrival_at_s, np.full(len(requests), SERVICE_S))
    r = result.records
    np.testing.assert_allclose(r.scheduled_at_s, start, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(r.finish_at_s, finish, rtol=1e-12, atol=1e-9)
    assert np.any(start == requests.arrival_at_s) and np.any(start > requests.arrival_at_s)  # idle and busy


def test_batch1_replica_is_an_exact_fifo_single_server_mm1(llama8b_batch1, stub_models, poisson_requests):
    """Exponential service: each request's service is one draw, in arrival order; starts follow Lindley."""
    _, exponential = stub_models
    model = exponential(llama8b_batch1, SERVICE_S, np.random.default_rng(5))
    requests = poisson_requests(RHO / SERVICE_S, 3000, np.random.default_rng(12))
    result = _run(llama8b_batch1, model, requests)
    _assert_conservation(result)
    r = result.records
    service = np.asarray(model.draws_s[-len(requests):])  # earlier draws: the fleet's capacity probe
    np.testing.assert_allclose(r.finish_at_s - r.scheduled_at_s, service, rtol=1e-9, atol=1e-9)
    start, finish = _lindley_starts(requests.arrival_at_s, service)
    np.testing.assert_allclose(r.scheduled_at_s, start, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(r.finish_at_s, finish, rtol=1e-12, atol=1e-9)


def test_pulled_and_pushed_arrivals_give_identical_records(llama8b_batch1, stub_models, poisson_requests):
    """A state-blind router pre-routes and replicas pull at step boundaries; a state-aware one pushes
    at the arrival instant. On one replica both must produce the same schedule."""
    fixed, _ = stub_models
    requests = poisson_requests(RHO / SERVICE_S, 2000, np.random.default_rng(13))
    model = fixed(llama8b_batch1, SERVICE_S)
    pulled = _run(llama8b_batch1, model, requests, router="round-robin").records
    pushed = _run(llama8b_batch1, model, requests, router="least-outstanding").records
    for name in ("scheduled_at_s", "first_token_at_s", "finish_at_s"):
        np.testing.assert_allclose(getattr(pulled, name), getattr(pushed, name), rtol=1e-12, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# Closed forms over seeded replications
# ----------------------------------------------------------------------------------------------


def _replicate(dep, make_model, poisson_requests, *, num_replicas: int = 1,
               router: str = "random") -> list[tuple[RunStats, RunResult]]:
    """``NUM_REPLICATIONS`` runs at utilisation ``RHO`` per replica (independent seeds per run)."""
    out = []
    rate = num_replicas * RHO / SERVICE_S
    for rep in range(NUM_REPLICATIONS):
        seeds = np.random.SeedSequence([2024, rep]).spawn(2)
        requests = poisson_requests(rate, NUM_REQUESTS, np.random.default_rng(seeds[0]))
        result = _run(dep, make_model(np.random.default_rng(seeds[1])), requests,
                      num_replicas=num_replicas, router=router, seed=rep)
        _assert_conservation(result)
        out.append((_stats(result), result))
    return out


@pytest.mark.slow
def test_md1_mean_wait(llama8b_batch1, stub_models, poisson_requests):
    """M/D/1: Wq = rho / (2 mu (1 - rho)); TTFT = Wq + D; L = lambda W (Pollaczek-Khinchine)."""
    fixed, _ = stub_models
    runs = _replicate(llama8b_batch1, lambda rng: fixed(llama8b_batch1, SERVICE_S), poisson_requests)
    mu = 1.0 / SERVICE_S
    wq = RHO / (2.0 * mu * (1.0 - RHO))
    _assert_matches([s.wait_s for s, _ in runs], wq, "M/D/1 mean wait")
    _assert_matches([s.sojourn_s for s, _ in runs], wq + SERVICE_S, "M/D/1 mean TTFT")
    _assert_matches([s.number_in_system for s, _ in runs], RHO * mu * (wq + SERVICE_S), "M/D/1 L")


@pytest.mark.slow
def test_mm1_mean_sojourn(llama8b_batch1, stub_models, poisson_requests):
    """M/M/1: W = 1 / (mu - lambda), Wq = rho / (mu - lambda), L = rho / (1 - rho)."""
    _, exponential = stub_models
    runs = _replicate(llama8b_batch1, lambda rng: exponential(llama8b_batch1, SERVICE_S, rng),
                      poisson_requests)
    mu, lam = 1.0 / SERVICE_S, RHO / SERVICE_S
    _assert_matches([s.sojourn_s for s, _ in runs], 1.0 / (mu - lam), "M/M/1 mean sojourn")
    _assert_matches([s.wait_s for s, _ in runs], RHO / (mu - lam), "M/M/1 mean wait")
    _assert_matches([s.number_in_system for s, _ in runs], RHO / (1.0 - RHO), "M/M/1 L")


@pytest.mark.slow
def test_c_replicas_behind_random_router_are_independent_mm1_queues(llama8b_batch1, stub_models,
                                                                    poisson_requests):
    """c replicas, Poisson(lambda) split uniformly at random: each is M/M/1 at lambda / c, so the fleet's
    mean sojourn is 1 / (mu - lambda / c) and each replica gets ~1/c of the requests (binomial)."""
    _, exponential = stub_models
    c = 3
    runs = _replicate(llama8b_batch1, lambda rng: exponential(llama8b_batch1, SERVICE_S, rng),
                      poisson_requests, num_replicas=c)
    mu, lam = 1.0 / SERVICE_S, c * RHO / SERVICE_S
    _assert_matches([s.sojourn_s for s, _ in runs], 1.0 / (mu - lam / c), f"{c} x M/M/1 mean sojourn")
    _assert_matches([s.number_in_system for s, _ in runs], c * RHO / (1.0 - RHO), f"{c} x M/M/1 L")
    for _, result in runs[:3]:
        r = result.records
        counts = np.bincount(r.replica, minlength=c)
        n = len(r)
        assert np.all(np.abs(counts - n / c) < 5.0 * math.sqrt(n * (1 / c) * (1 - 1 / c)))
        for k in range(c):  # every replica on its own is an exact FIFO single server
            mine = r.replica == k
            start, _ = _lindley_starts(r.arrival_at_s[mine], (r.finish_at_s - r.scheduled_at_s)[mine])
            np.testing.assert_allclose(r.scheduled_at_s[mine], start, rtol=1e-12, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("router", ["least-outstanding", "random"])
def test_monitored_queue_length_obeys_littles_law(llama8b_batch1, stub_models, poisson_requests, router):
    """Little's law for the waiting line, measured two independent ways: the simulator's monitor
    samples the number waiting (``summary().num_waiting_mean``); the records give lambda x mean wait.
    They must agree whichever way arrivals reach the replica (pushed or pulled at step boundaries)."""
    fixed, _ = stub_models
    differences = []
    for rep in range(NUM_REPLICATIONS):
        requests = poisson_requests(RHO / SERVICE_S, 4000, np.random.default_rng([77, rep]))
        result = _run(llama8b_batch1, fixed(llama8b_batch1, SERVICE_S), requests, router=router, seed=rep)
        _assert_conservation(result)
        s = _stats(result)
        differences.append(s.waiting_monitor - s.arrival_rate_per_s * s.wait_s)
    d = np.asarray(differences)
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d))
    lq = RHO**2 / (2.0 * (1.0 - RHO))  # M/D/1 mean number waiting, for scale
    assert se < MAX_REL_SE * lq
    assert abs(mean) < Z_TOLERANCE * se, (
        f"monitored number waiting ({router}) differs from lambda x mean wait by {mean:+.4f} +- {se:.4f} "
        f"(1 se; the M/D/1 queue holds {lq:.3f} on average)"
    )
