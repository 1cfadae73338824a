"""Calibration: the optimiser, recovery of known parameters, physical bounds, residual quantiles."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from simulator import calibration, mlperf, replay
from simulator.efficiency import calibration_key, lookup_efficiency, model_log_factor

PHYSICAL = ("compute_frac", "memory_frac", "network_frac")


def _h100_rows() -> list[mlperf.ResultRow]:
    rows = mlperf.deduplicate(mlperf.load_results())
    keep = [r for r in rows if r.accelerator == "H100" and r.total_accelerators <= 8
            and r.benchmark.startswith(("llama3.1-8b", "mixtral", "llama2-70b-99"))]
    by_config: dict[tuple, mlperf.ResultRow] = {}
    for r in keep:
        by_config.setdefault((r.benchmark.split("-99")[0], r.scenario, r.total_accelerators), r)
    return list(by_config.values())


def _assert_physical(groups: dict) -> None:
    for key, entry in groups.items():
        params = entry["params"]
        for name in PHYSICAL:
            assert 0.0 < params[name] <= 1.0, (key, name, params[name])
        assert 0.0 <= params["step_overhead_ms"] <= calibration.OVERHEAD_MAX_MS, key
        assert 0.0 <= params["seq_overhead_us"] <= calibration.SEQ_OVERHEAD_MAX_US, key


def test_nelder_mead_finds_a_quadratic_minimum() -> None:
    target = np.array([0.3, -0.2, 0.1])
    best = calibration.nelder_mead(lambda x: float(np.sum((x - target) ** 2)), np.zeros(3), iters=400,
                                   tol=1e-12)
    assert np.allclose(best, target, atol=1e-3)


def test_fit_recovers_known_parameters_from_synthetic_rows() -> None:
    rows = _h100_rows()
    assert len(rows) >= 6
    truth = {"compute_frac": 0.55, "memory_frac": 0.70, "network_frac": 0.81, "step_overhead_ms": 1.5}
    group = calibration_key("h100", "fp8", "trtllm")
    true_cal = {group: {"params": truth}, "architecture:hopper": {"params": truth}}
    items = calibration.fit_rows(rows)
    synthetic = []
    for row, spec, _ in items:
        value = replay.predict(spec, calibration=true_cal, mode="fast")["predicted"]
        synthetic.append(replace(row, measured=value))
    doc = calibration.fit(synthetic)
    groups = doc["groups"]
    _assert_physical(groups)
    fitted = groups[group]["params"] if group in groups else groups["architecture:hopper"]["params"]
    # the synthetic rows are reproduced, and the compute efficiency that drives them is recovered
    residuals = calibration.log_residuals(calibration.fit_rows(synthetic), groups)
    assert float(np.sqrt(np.mean(residuals ** 2))) < 0.05
    assert fitted["compute_frac"] == pytest.approx(truth["compute_frac"], rel=0.2)
    # memory efficiency and step overhead trade along a ridge (decode steps are memory time + overhead),
    # so they are judged by what they predict: the same benchmarks at GPU counts other than the fitted ones
    for row in {(r.benchmark, r.scenario): r for r in rows}.values():
        for gpus in (2, 4, 8):
            moved = replace(row, total_accelerators=gpus, accelerators_per_node=gpus, nodes=1)
            spec = mlperf.replay_spec(moved)
            true_value = replay.predict(spec, calibration=true_cal, mode="fast")["predicted"]
            fitted_value = replay.predict(spec, calibration=groups, mode="fast")["predicted"]
            assert abs(math.log(fitted_value / true_value)) < 0.05, (row.benchmark, row.scenario, gpus)


def test_fitted_efficiencies_stay_physical_even_for_absurd_data() -> None:
    rows = _h100_rows()[:4]
    absurd = [replace(r, measured=r.measured * 50.0) for r in rows]
    doc = calibration.fit(absurd)
    _assert_physical(doc["groups"])


def test_shipped_calibration_is_physical_and_has_provenance() -> None:
    doc = calibration.load_calibration()
    if not doc:
        pytest.skip("no calibration.yaml written yet")
    groups = doc["groups"]
    _assert_physical(groups)
    for key, entry in groups.items():
        assert "provenance" in entry and "n_rows" in entry, key
        if entry["n_rows"]:
            q = entry["residuals"]["log_residual_quantiles"]
            assert q["p05"] <= q["p50"] <= q["p95"], key
    for model, entry in doc["model_factors"].items():   # each model's scatter, for the sizing interval
        q = entry["residuals"]["log_residual_quantiles"]
        assert q["p05"] <= q["p50"] <= q["p95"] and entry["n_rows"] > 0, model


def test_forecast_residuals_sort_each_newer_rounds_rows_by_what_was_new() -> None:
    rows = [r for r in mlperf.deduplicate(mlperf.load_results())
            if r.benchmark.startswith("llama2-70b") and r.accelerator in ("H100", "H200") and r.measured]
    items = calibration.fit_rows(rows)
    out = calibration.forecast_residuals(rows)
    oldest = min((it[0].version for it in items), key=mlperf.version_key)
    newer = [(row, keys) for row, _, keys in items if row.version != oldest]

    def older_rows(row: mlperf.ResultRow, key: str) -> int:
        v = mlperf.version_key(row.version)
        return sum(1 for r, _, k in items if k[0] == key and mlperf.version_key(r.version) < v)
    # new hardware: the older rounds have too few rows of its group for an entry of its own
    new_hw = sum(1 for row, keys in newer if older_rows(row, keys[0]) < calibration.MIN_GROUP_ROWS)
    assert sum(out[k]["n_rows"] for k in calibration.FORECAST_KINDS if k in out) == len(newer)
    assert out.get("new_hardware", {}).get("n_rows", 0) == new_hw > 0
    assert "new_model" not in out   # one benchmark, present from the oldest round
    q = out["known"]["log_residual_quantiles"]
    assert q["p05"] <= q["p50"] <= q["p95"]


def test_residual_scaling_is_ordered_and_physical() -> None:
    base = lookup_efficiency("h100", "hopper", "fp8", "trtllm", calibration={"h100/fp8/trtllm": {
        "params": {"compute_frac": 0.6, "memory_frac": 0.8, "network_frac": 0.8, "step_overhead_ms": 2.0}}})
    lo, mid, hi = (base.scaled_by_residual(r) for r in (-0.3, 0.0, 0.4))
    assert lo.compute_frac < mid.compute_frac < hi.compute_frac
    assert mid.compute_frac == pytest.approx(0.6)
    assert lo.compute_frac == pytest.approx(0.6 * math.exp(-0.3))
    assert hi.memory_frac == 1.0  # 0.8 * e^0.4 > 1: clipped, stays physical
    assert lo.step_overhead_s > mid.step_overhead_s


def _biased_h100_rows(bias) -> tuple[list, list]:
    """(fit items, rows whose measured value is the true-efficiency prediction x bias(spec))."""
    items = calibration.fit_rows(_h100_rows())
    truth = {"compute_frac": 0.55, "memory_frac": 0.70, "network_frac": 0.81, "step_overhead_ms": 1.5}
    true_cal = {"h100/fp8/trtllm": {"params": truth}, "architecture:hopper": {"params": truth}}
    synthetic = []
    for row, spec, _ in items:
        value = replay.predict(spec, calibration=true_cal, mode="fast")["predicted"]
        synthetic.append(replace(row, measured=value * bias(spec)))
    return items, synthetic


def test_model_factor_picks_up_a_model_specific_bias_and_is_ignored_for_unseen_models() -> None:
    items, synthetic = _biased_h100_rows(lambda spec: 2.0 if spec.model_id == "mixtral-8x7b" else 1.0)
    doc = calibration.fit(synthetic)
    factors = doc["model_factors"]
    others = [v["log_throughput_factor"] for m, v in factors.items() if m != "mixtral-8x7b"]
    assert factors["mixtral-8x7b"]["log_throughput_factor"] - max(others) > 0.3
    assert model_log_factor("deepseek-r1", factors) == 0.0  # no rows of it: no factor
    mixtral = factors["mixtral-8x7b"]
    assert set(mixtral["by_scenario"]) == {spec.scenario for _, spec, _ in items
                                           if spec.model_id == "mixtral-8x7b"}
    for scenario, value in mixtral["by_scenario"].items():  # the bias is not scenario-specific here
        assert value == pytest.approx(mixtral["log_throughput_factor"], abs=0.15)
        latest = mixtral["by_version"][max(mixtral["by_version"], key=mlperf.version_key)]
        nested = mixtral["by_scenario_version"][scenario]
        latest += nested[max(nested, key=mlperf.version_key)]
        assert model_log_factor("mixtral-8x7b", factors, scenario) == pytest.approx(value + latest)
    without = calibration.fit(synthetic, use_model_factors=False)
    assert without["model_factors"] == {}


def test_scenario_factor_picks_up_a_scenario_specific_bias() -> None:
    """Server rows measured 1.5x what the true efficiencies give (Offline rows exact): the Server factor
    rises above the Offline one by about log 1.5, the model factor sits between."""
    _, synthetic = _biased_h100_rows(lambda spec: 1.5 if spec.scenario == "server" else 1.0)
    factors = calibration.fit(synthetic)["model_factors"]
    for entry in factors.values():
        by = entry["by_scenario"]
        if "server" in by and "offline" in by:
            assert by["server"] - by["offline"] > 0.2
            assert by["offline"] <= entry["log_throughput_factor"] <= by["server"]


def test_scenario_round_offset_picks_up_a_bias_of_one_scenario_in_one_round() -> None:
    """Server rows of the latest round measured 1.6x the truth, everything else exact: that (scenario,
    round) offset is the largest by a clear margin, and the prediction of those rows rises by ~log 1.6."""
    items = calibration.fit_rows(_h100_rows())
    latest = max({spec.version for _, spec, _ in items}, key=mlperf.version_key)
    assert any(spec.scenario == "server" and spec.version == latest for _, spec, _ in items)
    _, synthetic = _biased_h100_rows(
        lambda spec: 1.6 if (spec.scenario, spec.version) == ("server", latest) else 1.0)
    factors = calibration.fit(synthetic)["model_factors"]
    for model, entry in factors.items():
        nested = entry["by_scenario_version"]
        if latest not in nested.get("server", {}):
            continue
        others = [v for sc, by in nested.items() for ver, v in by.items() if (sc, ver) != ("server", latest)]
        assert nested["server"][latest] > max(others, default=0.0) + 0.05, model
        old_round = [ver for ver in nested["server"] if ver != latest]
        if old_round:  # the same model's Server factor in the latest round exceeds an older round's
            gain = (model_log_factor(model, factors, "server", latest)
                    - model_log_factor(model, factors, "server", old_round[0]))
            assert gain > 0.15, model


def test_round_offset_uses_the_nearest_fitted_round() -> None:
    from simulator.efficiency import version_offset

    by_version = {"v5.1": -0.4, "v4.1": -0.1, "v6.0": 0.2}
    assert version_offset(by_version, "v5.1") == -0.4
    assert version_offset(by_version, "v7.0") == 0.2      # newer than any fitted round: the latest
    assert version_offset(by_version, "v5.0") == -0.1     # between rounds: the older neighbour
    assert version_offset(by_version, "v3.1") == -0.1     # older than any: the oldest
    assert version_offset(by_version, None) == 0.2        # sizing: today's software
    assert version_offset({}, "v6.0") == 0.0
    factors = {"m": {"log_throughput_factor": 0.1, "by_scenario": {"server": 0.3}, "by_version": by_version}}
    assert model_log_factor("m", factors, "server", "v4.1") == pytest.approx(0.2)
    assert model_log_factor("m", factors, "offline", "v6.0") == pytest.approx(0.3)
    factors["m"]["by_scenario_version"] = {"server": {"v6.0": 0.25}}  # a round within one scenario
    assert model_log_factor("m", factors, "server", "v6.0") == pytest.approx(0.75)
    assert model_log_factor("m", factors, "server", None) == pytest.approx(0.75)  # sizing: latest
    assert model_log_factor("m", factors, "server", "v4.1") == pytest.approx(0.2 + 0.25)  # nearest fitted
    assert model_log_factor("m", factors, "offline", "v6.0") == pytest.approx(0.3)


def test_bridge_sample_picks_each_configuration_in_proportion_to_its_rows() -> None:
    """Systematic sampling: a configuration holding m of a (model, scenario)'s n single-part rows is picked
    within one of K m / n times, so the median over the picks estimates the median over the rows."""
    items = calibration.fit_rows(mlperf.deduplicate(mlperf.load_results()))
    picks = calibration.bridge_specs(items)
    assert ("llama2-70b", "interactive") in picks and ("deepseek-r1", "offline") in picks
    for pair, specs in picks.items():
        mine = [str(replay.part_keys(spec)[0]) for _, spec, _ in items
                if (spec.model_id, spec.scenario) == pair and len(replay.part_keys(spec)) == 1]
        k = len(specs)
        assert k == min(calibration.BRIDGE_CONFIGS, len(mine))
        picked = [str(replay.part_keys(spec)[0]) for spec in specs]
        for config in set(mine):
            assert abs(picked.count(config) - k * mine.count(config) / len(mine)) < 1.0, (pair, config)


def test_simulation_correction_makes_the_simulation_unbiased_on_its_sample() -> None:
    """After the fit, the simulated predictions of the sampled rows (model factors and the correction
    included) have a median log ratio to the fast evaluator's of 0 in every scenario (to the stored
    4-decimal rounding); without ``simulation_bridge`` there is no correction."""
    rows = [r for r in _h100_rows() if r.benchmark.startswith("llama3.1-8b")]
    assert calibration.fit(rows)["model_factors"]["llama3.1-8b"].get("sim_correction") is None
    doc = calibration.fit(rows, simulation_bridge=True)
    cal, factors = doc["groups"], doc["model_factors"]
    picks = calibration.bridge_specs(calibration.fit_rows(mlperf.deduplicate(rows)))
    assert set(factors["llama3.1-8b"]["sim_correction"]) == {sc for _, sc in picks} == {"offline", "server"}
    for specs in picks.values():
        preds = [replay.predict(spec, cal, mode="full", model_factors=factors) for spec in specs]
        logs = [math.log(p["predicted"] / p["predicted_fast"]) for p in preds]
        assert float(np.median(logs)) == pytest.approx(0.0, abs=1e-4)
