"""The planner against fake evaluators whose answers are known exactly, plus a small end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator import planner
from simulator.candidates import analytic_bounds, enumerate_candidates
from simulator.deployment import Deployment, plan_memory
from simulator.errors import InputError
from simulator.scenario import Scenario, load_scenario
from simulator.scenario_files import load_raw, parse_grid, parse_override
from simulator.sizing import LoadVerdict
from simulator.units import per_hour_to_per_s, per_million

SERVER = "llama2-70b-1m-mi355x-server"
MEAN_OUT_TOKENS = 291.0


class FakeFleet:
    """n replicas pass iff rate <= capacity * n * pooling(n) (exactly monotone); capacity is a fixed fraction
    of the analytic guess (so it lies inside the search's bracket), scaled by the memory efficiency."""

    def __init__(self, dep: Deployment, capacity_per_s: float, pooling: float) -> None:
        self.dep, self.capacity_per_s, self.pooling = dep, capacity_per_s, pooling
        self.calls: list[tuple[int, float]] = []

    def evaluate(self, num_replicas: int, rate_per_s: float) -> LoadVerdict:
        self.calls.append((num_replicas, rate_per_s))
        pooled = self.capacity_per_s * num_replicas * (self.pooling if num_replicas > 1 else 1.0)
        load = rate_per_s / pooled
        return LoadVerdict(
            meets_slo=load <= 1.0, saturated=load > 1.1, ttft_p99_s=0.5 * load, tpot_p99_s=0.05 * load,
            output_tokens_per_s=rate_per_s * MEAN_OUT_TOKENS, utilisation_frac=min(load, 1.0),
            extra={"output_tokens_per_s_per_user": 20.0 / load, "kv_occupancy_mean_frac": 0.5},
        )


class Factory:
    """``evaluator_factory`` hook: records each candidate's fake and its capacity."""

    def __init__(self, guess_frac: float = 0.9, pooling: float = 1.0) -> None:
        self.guess_frac, self.pooling = guess_frac, pooling
        self.fakes: dict[str, FakeFleet] = {}

    def capacity(self, dep: Deployment, sc: Scenario) -> float:
        bounds = analytic_bounds(dep, plan_memory(dep), sc.workload, sc.slo.to_slo(), _rng(sc))
        return self.guess_frac * bounds.rate_guess_per_s * dep.efficiency.memory_frac / 0.25

    def __call__(self, dep: Deployment, sc: Scenario, bounds) -> FakeFleet:
        fake = FakeFleet(dep, self.guess_frac * bounds.rate_guess_per_s * dep.efficiency.memory_frac / 0.25,
                         self.pooling)
        self.fakes[f"{dep.accelerator.id} {dep.precision_name} {dep.layout.label()}"] = fake
        return fake


def _rng(sc: Scenario):
    import numpy as np

    return np.random.default_rng(sc.simulation.seed)


def scenario(*overrides: str) -> Scenario:
    return load_scenario(SERVER, list(overrides))


def exact_replicas(target_per_s: float, capacity_per_s: float) -> int:
    n = max(1, math.floor(target_per_s / capacity_per_s))
    while target_per_s > capacity_per_s * n:
        n += 1
    return n


def test_fake_fleet_answers_are_exact_and_ranked_by_gpus():
    sc = scenario("simulation.verify=all")
    factory = Factory()
    result = planner.size(sc, evaluator_factory=factory)
    target = sc.target_rate_per_s()
    assert len(result.rows) == 4 and all(r["feasible"] and r["verified"] for r in result.rows)
    for row in result.rows:
        fake = factory.fakes[f"{row['hardware']} {row['precision']} {row['layout']}"]
        assert row["replicas"] == exact_replicas(target, fake.capacity_per_s)
        assert row["gpus"] == row["replicas"] * row["tp"] * row["pp"]
        assert row["nodes"] == math.ceil(row["gpus"] / 8)  # whole replicas per 8-GPU node
        assert row["racks"] == math.ceil(row["nodes"] / 8)  # the scenario's 8 nodes per rack
        # the one-replica search brackets the capacity within rel_tol, from below
        assert fake.capacity_per_s / (1 + sc.simulation.rel_tol) <= row["rate_per_replica_per_s"]
        assert row["rate_per_replica_per_s"] <= fake.capacity_per_s
    assert [r["rank"] for r in result.rows] == [1, 2, 3, 4]
    assert [r["gpus"] for r in result.rows] == sorted(r["gpus"] for r in result.rows)
    assert result.best is result.rows[0]
    payload = result.to_json()
    for key in ("hardware", "precision", "tp", "pp", "ep", "replicas", "gpus", "nodes", "output_tokens_per_s",
                "output_tokens_per_s_per_gpu", "ttft_p99_s", "tpot_p99_s", "power_kw", "feasible"):
        assert key in payload["best"]


def test_verification_moves_below_the_estimate_when_the_router_pools():
    sc = scenario("simulation.verify=all", "layouts.tp=[1]")
    factory = Factory(pooling=1.15)
    row = planner.size(sc, evaluator_factory=factory).rows[0]
    fake = next(iter(factory.fakes.values()))
    target = sc.target_rate_per_s()
    assert row["estimated_replicas"] >= exact_replicas(target, fake.capacity_per_s)
    assert row["replicas"] == exact_replicas(target, fake.capacity_per_s * 1.15) < row["estimated_replicas"]
    fleet_runs = [c for c in fake.calls if c[0] > 1]
    assert all(rate == pytest.approx(target) for _, rate in fleet_runs)


def test_only_competitive_candidates_get_fleet_runs():
    sc = scenario()  # verify: competitive, margin 25%
    factory = Factory()
    rows = planner.size(sc, evaluator_factory=factory).rows
    best_gpus = rows[0]["gpus"]
    for row in rows:
        fake = factory.fakes[f"{row['hardware']} {row['precision']} {row['layout']}"]
        fleet_runs = [c for c in fake.calls if c[0] > 1]
        assert row["verified"] == bool(fleet_runs)
        if not row["verified"]:
            assert row["gpus"] > 1.25 * best_gpus and "not verified" in row["note"]
            assert row["replicas"] == row["estimated_replicas"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model=llama3.1-405b", "workload.benchmark=llama3.1-405b", "formats=bf16", "hardware=h100",
          "layouts.tp=[1]"], "does not fit on h100"),
        (["slo.tpot_p99_ms=1"], "SLO unreachable even at batch 1: best p99 TPOT"),
        (["slo.ttft_p99_ms=1"], "best p99 TTFT"),
        (["layouts.tp=[16]"], "exceeds the mi355x scale-up domain of 8 GPUs"),
    ],
)
def test_candidates_that_cannot_work_keep_their_reason(overrides, needle):
    result = planner.size(scenario(*overrides), evaluator_factory=Factory())
    assert result.best is None
    assert all(not r["feasible"] and needle in r["reason"] for r in result.rows), result.rows[0]["reason"]
    assert all(r["rank"] is None for r in result.rows)


def test_a_target_beyond_the_packaging_limits_is_bad_input():
    with pytest.raises(InputError, match=r"impossible within packaging.max_gpus=16"):
        planner.size(scenario("packaging.max_gpus=16"), evaluator_factory=Factory())
    with pytest.raises(InputError, match=r"packaging.max_racks=1"):
        planner.size(scenario("packaging.max_racks=1", "layouts.tp=[8]"), evaluator_factory=Factory())
    lenient = planner.size(scenario("packaging.max_gpus=16"), evaluator_factory=Factory(),
                           strict_limits=False)
    assert all(not r["feasible"] and "packaging.max_gpus=16" in r["reason"] for r in lenient.rows)
    # a limit the answer fits in changes nothing
    free = planner.size(scenario("layouts.tp=[1]"), evaluator_factory=Factory()).best
    capped = planner.size(scenario("layouts.tp=[1]", f"packaging.max_gpus={free['gpus'] + 8}"),
                          evaluator_factory=Factory()).best
    assert capped["gpus"] == free["gpus"]


def test_a_limit_equal_to_the_exact_need_is_feasible():
    """The one-replica search ends at the lower end of its bracket, so target / rate can round up to one
    replica more than needed. A limit equal to the exact need must still be met, not refused."""
    sc = scenario("layouts.tp=[1]")
    target = sc.target_rate_per_s()
    unit = Factory(guess_frac=1.0)
    per_replica = next(iter(planner.size(sc, evaluator_factory=unit).rows))  # fills unit.fakes
    assert per_replica["feasible"]
    capacity_1 = next(iter(unit.fakes.values())).capacity_per_s
    need = 8 * math.ceil(target / capacity_1 / 8)  # whole 8-GPU nodes of TP1 replicas
    factory = Factory(guess_frac=target / ((need - 1e-3) * capacity_1))  # need - 1e-3 replicas exactly
    best = planner.size(scenario("layouts.tp=[1]", f"packaging.max_gpus={need}"),
                        evaluator_factory=factory).best
    assert best["gpus"] == need


def test_costs_rank_by_dollars_and_price_the_tokens():
    sc = scenario("hardware=mi355x,h200", "formats=auto", "layouts.tp=[1,8]", "costs.usd_per_kwh=0.08",
                  "costs.pue=1.3", "headroom.spare_frac=0.1", "simulation.verify=all")
    rows = planner.size(sc, evaluator_factory=Factory()).rows
    feasible = [r for r in rows if r["feasible"]]
    assert [r["usd_per_hour"] for r in feasible] == sorted(r["usd_per_hour"] for r in feasible)
    for r in feasible:
        assert r["spare_nodes"] == math.ceil(0.1 * (r["nodes"] - r["spare_nodes"]))
        assert r["facility_power_kw"] == pytest.approx(1.3 * r["power_kw"])
        assert r["usd_per_million_output_tokens"] == pytest.approx(
            per_million(per_hour_to_per_s(r["usd_per_hour"]) / r["output_tokens_per_s"]))
        assert r["energy_usd_per_hour"] == pytest.approx(r["facility_power_kw"] * 0.08)


def test_efficiency_variants_resize_only_the_best_row():
    def variants(dep: Deployment):
        eff = dep.efficiency
        return {"slow": eff.scaled(memory_frac=0.8), "fast": eff.scaled(memory_frac=1.2)}

    result = planner.size(scenario("layouts.tp=[1,8]"), evaluator_factory=Factory(),
                          efficiency_variants=variants)
    best, other = result.rows
    assert best["gpus_slow"] > best["gpus"] > best["gpus_fast"]
    assert other["gpus_slow"] is None and other["gpus_fast"] is None
    assert list(best)[list(best).index("gpus") + 1:][:2] == ["gpus_slow", "gpus_fast"]  # beside gpus
    assert [(c.label, c.tag) for c in result.cases] == [("mi355x fp4 TP1", t) for t in ("slow", "fast")]
    assert result.num_simulations == sum(r["num_evaluations"] for r in result.rows) + sum(
        c.num_evaluations for c in result.cases)


# --------------------------------------------------------------------------------------------- interval
def residual_document(log_p05: float, log_p95: float, key: str = "mi355x/fp4/vllm") -> dict:
    """A calibration document whose only residuals are ``key``'s p05 / p95 (p50 between)."""
    quantiles = {"p05": log_p05, "p50": 0.5 * (log_p05 + log_p95), "p95": log_p95}
    return {"groups": {key: {"n_rows": 10, "residuals": {"log_residual_quantiles": quantiles}}}}


def variant_capacity(sc: Scenario, log_residual: float, hardware: str = "mi355x") -> float:
    """The fake's capacity for the best candidate (TP1) with efficiency scaled by exp(log_residual)."""
    import dataclasses

    from simulator.candidate_search import _deploy

    dep = _deploy(sc, next(c for c in enumerate_candidates(sc) if c.hardware == hardware))
    scaled = dataclasses.replace(dep, efficiency=dep.efficiency.scaled_by_residual(log_residual))
    return Factory().capacity(scaled, sc)


@pytest.mark.parametrize(("low", "high"), [(0.8, 1.25), (0.95, 1.1), (1 - 1e-9, 1 + 1e-9)])
def test_interval_is_the_known_answer_for_known_efficiency_scalings(low, high):
    from simulator.uncertainty import IntervalVariants

    # a fine one-replica search makes every estimate near exact, so the answers are known to the replica
    sc = scenario("layouts.tp=[1]", "simulation.rel_tol=0.0005")
    hook = IntervalVariants(residual_document(math.log(low), math.log(high)))
    result = planner.size(sc, evaluator_factory=Factory(), efficiency_variants=hook)
    best, target = result.best, sc.target_rate_per_s()

    def answers(log_residual: float) -> set[int]:
        """The search finds one replica's limit within [cap / (1 + rel_tol), cap]: either end's count."""
        cap = variant_capacity(sc, log_residual)
        return {exact_replicas(target, cap), exact_replicas(target, cap / (1.0 + sc.simulation.rel_tol))}

    assert best["gpus"] in answers(0.0)
    assert best["gpus_p05"] in answers(math.log(high))
    assert best["gpus_p95"] in answers(math.log(low))
    assert best["gpus_p05"] <= best["gpus"] <= best["gpus_p95"]
    if low == 0.8:
        assert best["gpus_p05"] < best["gpus"] < best["gpus_p95"]


def test_interval_cases_never_undershoot_a_pooling_fleet():
    from simulator.uncertainty import IntervalVariants

    sc = scenario("layouts.tp=[1]", "simulation.verify=all")
    hook = IntervalVariants(residual_document(math.log(0.8), math.log(1.25)))
    best = planner.size(sc, evaluator_factory=Factory(pooling=1.15), efficiency_variants=hook).best
    target = sc.target_rate_per_s()
    for tag, r in (("gpus_p05", math.log(1.25)), ("gpus_p95", math.log(0.8))):
        cap = variant_capacity(sc, r)
        # the smallest passing fleet at or above the pooling-corrected estimate: never below the true minimum,
        # never above the unpooled estimate
        assert exact_replicas(target, 1.15 * cap) <= best[tag] <= exact_replicas(target, cap / (1 + 0.02)) + 1


def test_zero_residuals_collapse_the_interval_without_simulating():
    from simulator.uncertainty import IntervalVariants

    factory = Factory()
    result = planner.size(scenario("layouts.tp=[1,8]"), evaluator_factory=factory,
                          efficiency_variants=IntervalVariants(residual_document(0.0, 0.0)))
    best = result.best
    assert best["gpus_p05"] == best["gpus"] == best["gpus_p95"]
    assert all(c.num_evaluations == 0 and c.feasible for c in result.cases)
    assert len(factory.fakes) == 2  # no evaluator beyond the two candidates' own


def test_an_infeasible_pessimistic_case_keeps_its_reason():
    from simulator.uncertainty import IntervalVariants

    hook = IntervalVariants(residual_document(math.log(0.5), math.log(1.25)))
    free = planner.size(scenario("layouts.tp=[1]"), evaluator_factory=Factory(),
                        efficiency_variants=hook).best
    whole_nodes = 8 * math.ceil(free["gpus"] / 8)  # the limit counts provisioned GPUs, in 8-GPU nodes
    capped = planner.size(scenario("layouts.tp=[1]", f"packaging.max_gpus={whole_nodes}"),
                          evaluator_factory=Factory(), efficiency_variants=hook)
    best = capped.best
    assert best["gpus"] == free["gpus"] and best["gpus_p05"] == free["gpus_p05"]
    assert best["gpus_p95"] is None
    p95 = next(c for c in capped.cases if c.tag == "p95")
    assert not p95.feasible and p95.gpus is None and "packaging.max_gpus" in p95.reason
    assert capped.to_json()["interval_cases"][1]["reason"] == p95.reason


def test_announced_figure_ranges_widen_the_interval():
    from simulator.uncertainty import IntervalVariants

    doc = residual_document(math.log(0.9), math.log(1.1), key="vera-rubin-nvl72/fp4/trtllm")
    sc = scenario("hardware=vera-rubin-nvl72", "layouts.tp=[1]")
    ranged = planner.size(sc, evaluator_factory=Factory(), efficiency_variants=IntervalVariants(doc)).best
    plain = planner.size(sc, evaluator_factory=Factory(),
                         efficiency_variants=IntervalVariants(doc, use_ranges=False)).best
    assert ranged["gpus"] == plain["gpus"]
    assert ranged["gpus_p05"] <= plain["gpus_p05"] <= plain["gpus"] <= plain["gpus_p95"] < ranged["gpus_p95"]


def test_compare_divides_by_the_baseline():
    result = planner.compare(scenario("layouts.tp=[1,2]"), hardware=["mi355x", "h200"], baseline="h200",
                             evaluator_factory=Factory())
    rows = {r["hardware"]: r for r in result.rows}
    assert result.baseline == "h200" and set(rows) == {"mi355x", "h200"}
    assert rows["h200"]["uplift_vs_baseline"] == pytest.approx(1.0)
    assert rows["h200"]["gpus_ratio_vs_baseline"] == pytest.approx(1.0)
    assert rows["h200"]["precision"] == "fp8" and rows["mi355x"]["precision"] == "fp4"  # formats: auto
    m, h = rows["mi355x"], rows["h200"]
    per_gpu = "output_tokens_per_s_per_gpu"
    assert m["uplift_vs_baseline"] == pytest.approx(m[per_gpu] / h[per_gpu])
    assert m["gpus_ratio_vs_baseline"] == pytest.approx(m["gpus"] / h["gpus"])
    assert all(r["verified"] for r in result.rows)  # the winner and the baseline get fleet runs
    with pytest.raises(InputError, match="unknown baseline hardware 'b200'"):
        planner.compare(scenario(), hardware=["mi355x"], baseline="b200", evaluator_factory=Factory())


@pytest.mark.parametrize("verify_each", [False, True])
def test_compare_verifies_the_winner_and_the_baseline_or_each_generation(verify_each):
    factory = Factory()
    result = planner.compare(scenario("layouts.tp=[1]"), hardware=["mi355x", "h200", "mi300x"],
                             baseline="mi300x", evaluator_factory=factory, verify_each=verify_each)
    rows = {r["hardware"]: r for r in result.rows}
    assert rows["h200"]["gpus"] > 1.25 * rows["mi355x"]["gpus"]  # h200 is not competitive
    fleet_runs = {hw: any(n > 1 for n, _ in factory.fakes[f"{hw} {rows[hw]['precision']} TP1"].calls)
                  for hw in rows}
    assert fleet_runs == {"mi355x": True, "mi300x": True, "h200": verify_each}
    assert {hw: r["verified"] for hw, r in rows.items()} == fleet_runs
    if not verify_each:
        assert rows["h200"]["gpus"] == rows["h200"]["estimated_replicas"]  # its one-replica estimate


def test_sweep_writes_one_row_per_grid_point():
    raw, path = load_raw(SERVER)
    grid = [parse_grid("target.output_tokens_per_s=5e5,1e6"), parse_grid("slo.tpot_p99_ms=100,200")]
    rows = planner.sweep(raw, grid, overrides=[parse_override("layouts.tp=[1]")], where=str(path),
                         evaluator_factory=Factory())
    assert len(rows) == 4
    assert [(r["target.output_tokens_per_s"], r["slo.tpot_p99_ms"]) for r in rows] == [
        (5e5, 100), (5e5, 200), (1e6, 100), (1e6, 200)]
    assert rows[2]["replicas"] >= 2 * rows[0]["replicas"] - 1
    with pytest.raises(InputError, match=r"slo\.tpot_p99_ms"):
        planner.sweep(raw, [parse_grid("slo.tpot_p99_ms=-1,40")], evaluator_factory=Factory())


def test_the_frontier_keeps_the_upper_right_points():
    points = [(10, 100), (20, 90), (15, 80), (30, 50), (25, 40), (5, 120)]
    assert planner.frontier(points) == [(5, 120), (10, 100), (20, 90), (30, 50)]


def test_candidates_enumerate_the_cross_product_without_artefacts():
    sc = load_scenario("gpt-oss-120b-1m-mi355x",
                       ["layouts.tp=[1,2,8]", "layouts.ep=[1,2,8]", "layouts.attention=[tp]"])
    labels = [c.label for c in enumerate_candidates(sc)]
    assert labels == ["mi355x fp4 TP1", "mi355x fp4 TP2", "mi355x fp4 TP2 EP2", "mi355x fp4 TP8",
                      "mi355x fp4 TP8 EP2", "mi355x fp4 TP8 EP8"]
    both = load_scenario("gpt-oss-120b-1m-mi355x",
                         ["layouts.tp=[1,8]", "layouts.ep=[8]", "layouts.attention=[tp,dp]"])
    assert [c.label for c in enumerate_candidates(both)] == ["mi355x fp4 TP8 EP8",
                                                             "mi355x fp4 TP8 EP8 attn-DP"]
    one_gpu = load_scenario("gpt-oss-120b-1m-mi355x",
                            ["layouts.tp=[1]", "layouts.ep=[1]", "layouts.attention=[tp,dp]"])
    assert [c.label for c in enumerate_candidates(one_gpu)] == ["mi355x fp4 TP1"]  # dp over 1 GPU = tp
    dense = load_scenario(SERVER, ["layouts.ep=[1,8]", "layouts.replicas_per_node=[8,1]"])
    assert [c.label for c in enumerate_candidates(dense)] == ["mi355x fp4 TP1", "mi355x fp4 TP8"]
    with pytest.raises(InputError, match="no layout to search"):
        enumerate_candidates(load_scenario(SERVER, ["layouts.ep=[8]"]))


# --------------------------------------------------------------------------------------------- end to end
SMALL = ["model=llama3.1-8b", "workload.benchmark=llama3.1-8b", "slo.preset=mlperf-server", "hardware=h100",
         "formats=fp8", "layouts.tp=[1]", "target.output_tokens_per_s=1.5e5", "simulation.fidelity=0.1",
         "simulation.workers=1"]


@pytest.mark.slow
def test_end_to_end_small_scenario_is_feasible_reproducible_and_seed_stable():
    a = planner.size(load_scenario(SERVER, SMALL))
    b = planner.size(load_scenario(SERVER, SMALL))
    c = planner.size(load_scenario(SERVER, [*SMALL, "simulation.seed=1"]))
    assert a.best is not None and a.best["verified"]
    assert a.rows == b.rows  # same scenario and seed: the same answer, to the last digit
    best = a.best
    assert best["ttft_p99_s"] <= 2.0 and best["tpot_p99_s"] <= 0.1
    assert best["output_tokens_per_s"] == pytest.approx(1.5e5, rel=0.1)
    # Poisson splitting: n replicas at target / n each behave like the one replica the search ran, so the
    # fleet verdict lands close to the one-replica estimate (least-outstanding routing pools a little)
    assert abs(best["replicas"] - best["estimated_replicas"]) <= max(2, 0.1 * best["estimated_replicas"])
    assert abs(c.best["replicas"] - best["replicas"]) <= max(1, 0.02 * best["replicas"])


def test_simulated_replica_carries_the_real_rate_divided_by_the_model_factor():
    """A throughput factor f: a run at rate r simulates r / f (identical runs, same seed) and reports
    f times the carried tokens/s; latencies are the simulated replica's."""
    from simulator.candidates import SimulationEvaluator
    from simulator.deployment import make_deployment

    sc = scenario("model=llama3.1-8b", "workload.benchmark=llama3.1-8b")
    dep = make_deployment("llama3.1-8b", "h100", "fp8")
    kwargs = dict(router="least-outstanding", seed=0, search_duration_s=20.0, fleet_duration_s=20.0,
                  latency_hint_s=1.0)
    plain = SimulationEvaluator(dep, sc.workload, sc.slo.to_slo(), **kwargs).evaluate(1, 5.0)
    scaled = SimulationEvaluator(dep, sc.workload, sc.slo.to_slo(), throughput_factor=2.5,
                                 **kwargs).evaluate(1, 12.5)
    assert scaled.output_tokens_per_s == pytest.approx(2.5 * plain.output_tokens_per_s)
    assert plain.output_tokens_per_s > 0
    assert (scaled.ttft_p99_s, scaled.tpot_p99_s, scaled.meets_slo) == (
        plain.ttft_p99_s, plain.tpot_p99_s, plain.meets_slo)
    with pytest.raises(ValueError, match="throughput_factor"):
        SimulationEvaluator(dep, sc.workload, sc.slo.to_slo(), throughput_factor=0.0, **kwargs)


def test_a_light_probe_runs_long_enough_for_a_sample_of_arrivals():
    """At a load where the latency-based window expects under one arrival, the one-replica window is
    stretched to MIN_WINDOW_REQUESTS expected arrivals (before, Poisson could draw none: an error)."""
    from simulator.candidates import MIN_WINDOW_REQUESTS, SimulationEvaluator
    from simulator.deployment import make_deployment

    sc = scenario("model=llama3.1-8b", "workload.benchmark=llama3.1-8b")
    dep = make_deployment("llama3.1-8b", "h100", "fp8")
    evaluator = SimulationEvaluator(dep, sc.workload, sc.slo.to_slo(), router="least-outstanding", seed=0,
                                    search_duration_s=20.0, fleet_duration_s=20.0, latency_hint_s=1.0)
    rate_per_s = 0.02  # 0.32 expected arrivals in the 16 s window the latencies alone would give
    duration_s, warmup_s = evaluator.timing(1)
    assert rate_per_s * (duration_s - warmup_s) < 1.0
    verdict = evaluator.evaluate(1, rate_per_s)
    assert verdict.extra["simulated_s"] == pytest.approx(warmup_s + MIN_WINDOW_REQUESTS / rate_per_s)
    assert verdict.meets_slo and verdict.output_tokens_per_s > 0
    assert verdict.extra["steps_per_replica_s"] > 0
    # fleets are not stretched (their rate is the target, never a probe's)
    assert evaluator.timing(4) == evaluator._stretched(4, rate_per_s)


@pytest.mark.parametrize(("growth", "fails"), [(0.0, False), (0.003, False), (0.004, True)])
def test_a_queue_that_would_outgrow_the_ttft_limit_in_an_mlperf_run_fails(growth: float, fails: bool):
    """TTFT growing at g s per s adds g x QUEUE_HORIZON_S (600 s, MLPerf's minimum run) by the end of such
    a run: with a 2 s limit, 0.003 s per s (1.8 s) passes and 0.004 (2.4 s) fails, however short the
    simulated window that measured it."""
    from types import SimpleNamespace

    from simulator.candidates import QUEUE_HORIZON_S, SimulationEvaluator
    from simulator.deployment import make_deployment
    from simulator.metrics import RequestRecords, Slo

    assert QUEUE_HORIZON_S == 600.0
    sc = scenario("model=llama3.1-8b", "workload.benchmark=llama3.1-8b")
    evaluator = SimulationEvaluator(make_deployment("llama3.1-8b", "h100", "fp8"), sc.workload,
                                    Slo(ttft_p99_s=2.0, tpot_p99_s=0.1), router="least-outstanding", seed=0,
                                    search_duration_s=20.0, fleet_duration_s=20.0, latency_hint_s=1.0)
    arrival = np.linspace(0.0, 200.0, 2001)
    first = arrival + 0.2 + growth * arrival
    n = len(arrival)
    records = RequestRecords(arrival_at_s=arrival, first_token_at_s=first, finish_at_s=first + 5.0,
                             input_tokens=np.full(n, 100), output_tokens=np.full(n, 10),
                             preemptions=np.zeros(n, dtype=int), replica=np.zeros(n, dtype=int))
    result = SimpleNamespace(records=records, warmup_s=50.0, duration_s=200.0)
    assert evaluator._queue_outgrows_ttft(result) is fails


def test_fleet_runs_warm_up_longer_than_they_cool_down():
    """A fleet run near capacity warms up for FLEET_WARMUP_FACTOR x the one-replica multiple of mean
    latencies (batches still growing otherwise read as saturation), measures for FLEET_LENGTH_FACTOR x
    the window multiple, and cools down for the one-replica multiple, at least the p99 latency; the
    too-large guard prices exactly those three."""
    from simulator.candidates import (
        FLEET_LENGTH_FACTOR,
        FLEET_WARMUP_FACTOR,
        WARMUP_LATENCIES,
        WINDOW_LATENCIES,
        SimulationEvaluator,
    )
    from simulator.deployment import make_deployment

    sc = scenario("model=llama3.1-8b", "workload.benchmark=llama3.1-8b")
    mean_s, p99_s = 24.0, 82.0
    evaluator = SimulationEvaluator(make_deployment("llama3.1-8b", "h100", "fp8"), sc.workload,
                                    sc.slo.to_slo(), router="least-outstanding", seed=0,
                                    search_duration_s=20.0, fleet_duration_s=20.0, latency_hint_s=1.0,
                                    fleet_latency_s=(mean_s, p99_s))
    warmup_s = FLEET_WARMUP_FACTOR * WARMUP_LATENCIES * mean_s
    window_s = FLEET_LENGTH_FACTOR * WINDOW_LATENCIES * mean_s
    cooldown_s = max(WARMUP_LATENCIES * mean_s, p99_s)
    assert evaluator.timing(80) == pytest.approx((warmup_s + window_s, warmup_s))
    steps = evaluator.fleet_replica_steps(80, 10.0)
    assert steps == pytest.approx(80 * (warmup_s + window_s + cooldown_s) * 10.0)
    assert cooldown_s < warmup_s
