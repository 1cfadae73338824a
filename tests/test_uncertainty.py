"""The interval's cases: residual quantiles of the calibration, announced-hardware figure ranges."""

from __future__ import annotations

import math

import pytest

from simulator import calibration, uncertainty
from simulator.deployment import Layout, make_deployment
from simulator.errors import InputError
from simulator.hardware import load_accelerator


def residual_document(quantiles: dict[str, float], key: str, n_rows: int = 10,
                      overall: dict | None = None) -> dict:
    doc: dict = {"groups": {key: {"n_rows": n_rows, "residuals": {"log_residual_quantiles": quantiles}}}}
    if overall is not None:
        doc["meta"] = {"n_rows": 123, "overall": {"log_residual_quantiles": overall}}
    return doc


def test_shipped_calibration_cases_use_the_wider_of_group_and_model_residuals():
    dep = make_deployment("llama2-70b", "mi355x", "fp4", Layout(tp=1))
    doc = calibration.load_calibration()
    key = f"{dep.accelerator.id}/{dep.compute_family}/{dep.framework}"
    group = doc.get("groups", {}).get(key, {}).get("residuals")
    model = doc.get("model_factors", {}).get("llama2-70b", {}).get("residuals")
    if not group or not model:
        pytest.skip(f"the shipped calibration has no residuals for {key} and llama2-70b")
    sp = uncertainty.spread(dep, document=doc)
    assert sp.source == key and sp.num_rows == doc["groups"][key]["n_rows"] and sp.model == "llama2-70b"
    for tag, pick, r in (("p05", min, sp.log_residual_low), ("p95", max, sp.log_residual_high)):
        ends = (group["log_residual_quantiles"][tag], model["log_residual_quantiles"][tag])
        assert r == pytest.approx(pick(ends))
    assert sp.log_residual_low <= 0.0 <= sp.log_residual_high  # the median fit sits inside its own spread
    cases = uncertainty.cases(dep, sp)
    assert list(cases) == ["p05", "p95"]
    # the optimistic case (its GPUs are p05) is the efficiency at the residual's 95th percentile
    for tag, r in (("p05", sp.log_residual_high), ("p95", sp.log_residual_low)):
        assert cases[tag].efficiency == dep.efficiency.scaled_by_residual(r)
        assert cases[tag].accelerator_overrides == ()  # shipping hardware: residuals only
    note = cases["p05"].note
    assert "mi355x/fp4/vllm" in note and "MLPerf rows" in note and "the model llama2-70b" in note


def test_interval_is_the_wider_of_group_and_model_at_each_end():
    key = "h100/fp8/trtllm"
    doc = residual_document({"p05": -0.1, "p50": 0.0, "p95": 0.3}, key)
    doc["model_factors"] = {"llama2-70b": {"n_rows": 50, "residuals": {
        "log_residual_quantiles": {"p05": -0.4, "p50": 0.0, "p95": 0.2}}}}
    b = uncertainty.residual_bounds(doc, key, "hopper", "llama2-70b")
    assert (b.low, b.high) == (pytest.approx(-0.4), pytest.approx(0.3))
    assert (b.model, b.model_rows) == ("llama2-70b", 50)
    # a model without residuals leaves the group's quantiles; no group residuals leave the model's
    other = uncertainty.residual_bounds(doc, key, "hopper", "mixtral-8x7b")
    assert (other.low, other.high, other.model) == (pytest.approx(-0.1), pytest.approx(0.3), "")
    alone = uncertainty.residual_bounds({"model_factors": doc["model_factors"]}, key, "hopper", "llama2-70b")
    assert (alone.low, alone.high, alone.source) == (pytest.approx(-0.4), pytest.approx(0.2), "")


def test_unmeasured_hardware_or_model_widens_to_the_forecast_residuals():
    key = "h100/fp8/trtllm"
    doc = residual_document({"p05": -0.1, "p50": 0.0, "p95": 0.1}, key)
    doc["model_factors"] = {"llama2-70b": {"n_rows": 50, "residuals": {
        "log_residual_quantiles": {"p05": -0.2, "p50": 0.0, "p95": 0.2}}}}
    doc["meta"] = {"forecast": {
        "new_hardware": {"log_residual_quantiles": {"p05": -0.6, "p50": 0.0, "p95": 0.5}},
        "new_model": {"log_residual_quantiles": {"p05": -0.5, "p50": 0.0, "p95": 0.7}}}}
    measured = uncertainty.residual_bounds(doc, key, "hopper", "llama2-70b")
    assert (measured.low, measured.high, measured.forecast) == (pytest.approx(-0.2), pytest.approx(0.2), ())
    new_gpu = uncertainty.residual_bounds(doc, "b200/fp4/trtllm", "blackwell", "llama2-70b")
    assert (new_gpu.low, new_gpu.high, new_gpu.forecast) == (pytest.approx(-0.6), pytest.approx(0.5),
                                                              ("new_hardware",))
    new_model = uncertainty.residual_bounds(doc, key, "hopper", "deepseek-r1")
    assert (new_model.low, new_model.high, new_model.forecast) == (pytest.approx(-0.5), pytest.approx(0.7),
                                                                    ("new_model",))
    both = uncertainty.residual_bounds(doc, "b200/fp4/trtllm", "blackwell", "deepseek-r1")
    assert (both.low, both.high) == (pytest.approx(-0.6), pytest.approx(0.7))
    dep = make_deployment("llama2-70b", "b200", "fp4", Layout(tp=1))
    assert "missed newer rounds' new hardware" in uncertainty.spread(dep, document=doc).note()


def test_residuals_scale_fractions_and_overhead_oppositely():
    dep = make_deployment("llama2-70b", "h100", "fp8", Layout(tp=2))
    key = f"h100/{dep.compute_family}/{dep.framework}"
    doc = residual_document({"p05": math.log(0.5), "p50": 0.0, "p95": math.log(1.5)}, key)
    sp = uncertainty.spread(dep, document=doc)
    assert sp.log_residual_low == pytest.approx(math.log(0.5))
    # interpolation between the stored quantiles
    mid = uncertainty.spread(dep, document=doc, quantiles=(0.275, 0.725))
    assert mid.log_residual_low == pytest.approx(0.5 * math.log(0.5))
    assert mid.log_residual_high == pytest.approx(0.5 * math.log(1.5))
    assert (mid.optimistic_tag, mid.pessimistic_tag) == ("p28", "p72")
    cases = uncertainty.cases(dep, sp)
    eff, slow, fast = dep.efficiency, cases["p95"].efficiency, cases["p05"].efficiency
    assert slow.memory_frac == pytest.approx(0.5 * eff.memory_frac)
    assert slow.step_overhead_s == pytest.approx(2.0 * eff.step_overhead_s)
    assert slow.seq_overhead_s == pytest.approx(2.0 * eff.seq_overhead_s)
    assert fast.memory_frac == pytest.approx(min(1.0, 1.5 * eff.memory_frac))
    assert fast.compute_frac <= 1.0 and fast.network_frac <= 1.0  # clipped
    with pytest.raises(InputError, match="0 < low < high < 1"):
        uncertainty.spread(dep, document=doc, quantiles=(0.95, 0.05))


def test_zero_residuals_give_the_deployment_itself():
    dep = make_deployment("llama2-70b", "mi355x", "fp4", Layout(tp=1))
    zeros = {"p05": 0.0, "p50": 0.0, "p95": 0.0}
    for doc in (residual_document(zeros, "mi355x/fp4/vllm"), {}):
        cases = uncertainty.cases(dep, uncertainty.spread(dep, document=doc))
        assert all(c.efficiency == dep.efficiency and not c.accelerator_overrides for c in cases.values())
    assert "no calibration residuals" in uncertainty.spread(dep, document={}).note()


def test_announced_hardware_takes_the_favourable_end_of_each_range():
    acc = load_accelerator("vera-rubin-nvl72")
    dep = make_deployment("llama2-70b", acc, "fp4", Layout(tp=2))
    overall = {"p05": -0.3, "p50": 0.0, "p95": 0.25}
    sp = uncertainty.spread(dep, document=residual_document({"p05": -0.1, "p95": 0.1}, "h100/fp8/trtllm",
                                                            overall=overall))
    # no calibration rows of the architecture: the spread of all rows stands in
    assert sp.source == uncertainty.ALL_ROWS and sp.num_rows == 123
    assert sp.log_residual_low == pytest.approx(-0.3)
    ranged = {key for key, _, _ in sp.figure_ranges}
    # the GEMM (fp4) and attention (fp8 KV) peaks, HBM bandwidth, the collectives of a TP2 replica; not
    # power (it does not change the GPUs needed) nor the peaks of formats the deployment does not run
    assert ranged == {"hbm_bandwidth_bytes_per_s", "peak_fp4_flops_per_s", "peak_fp8_flops_per_s",
                      "allreduce_latency_s"}
    one_gpu = make_deployment("llama2-70b", acc, "fp4", Layout(tp=1))
    assert {k for k, _, _ in uncertainty.spread(one_gpu, document={}).figure_ranges} == ranged - {
        "allreduce_latency_s"}
    cases = uncertainty.cases(dep, sp)
    good, bad = dict(cases["p05"].accelerator_overrides), dict(cases["p95"].accelerator_overrides)
    lo, hi = acc.figure_range("hbm_bandwidth_bytes_per_s")
    assert good["hbm_bandwidth_bytes_per_s"] == hi and bad["hbm_bandwidth_bytes_per_s"] == lo
    lat_lo, lat_hi = acc.figure_range("allreduce_latency_s")
    assert good["allreduce_latency_s"] == lat_lo and bad["allreduce_latency_s"] == lat_hi  # lower is better
    # a figure already at the favourable end is not overridden (the fp4 peak's value is its high end)
    assert "peak_fp4_flops_per_s" not in good and bad["peak_fp4_flops_per_s"] < acc.peak_flops_per_s("fp4")
    assert "vera-rubin-nvl72's announced figures" in cases["p95"].note
    # the overrides apply: a case's accelerator has the end of the range
    assert acc.with_overrides(**bad).hbm_bandwidth_bytes_per_s == lo
    plain = uncertainty.spread(dep, document={}, use_ranges=False)
    assert plain.figure_ranges == ()


def test_shipping_hardware_ranges_are_not_used():
    acc = load_accelerator("mi355x")
    assert acc.ranges and not acc.is_announced
    dep = make_deployment("llama2-70b", acc, "fp4", Layout(tp=8))
    assert uncertainty.spread(dep, document={}).figure_ranges == ()


def test_table_columns_bracket_gpus_and_cases_keep_their_own_answers():
    from simulator.variants import VariantCase, with_case_columns

    def case(tag: str, gpus: int | None, bound: str) -> VariantCase:
        return VariantCase("h100 fp8 TP1", "h100", "fp8", "TP1", tag, gpus is not None, gpus, gpus,
                           None if gpus else "no", "", 3, bound)

    row = {"hardware": "h100", "precision": "fp8", "layout": "TP1", "gpus": 20, "nodes": 3}
    other = {"hardware": "h100", "precision": "fp8", "layout": "TP2", "gpus": 40, "nodes": 5}
    # a case within the search tolerance landed a replica on the wrong side: clamped to gpus
    rows = with_case_columns([row, other], [case("p05", 21, "low"), case("p95", 19, "high")])
    assert rows[0]["gpus_p05"] == 20 and rows[0]["gpus_p95"] == 20
    assert list(rows[0]) == ["hardware", "precision", "layout", "gpus", "gpus_p05", "gpus_p95", "nodes"]
    assert rows[1]["gpus_p05"] is None and rows[1]["gpus_p95"] is None
    rows = with_case_columns([row], [case("p05", 17, "low"), case("p95", None, "high"), case("x", 25, "")])
    assert (rows[0]["gpus_p05"], rows[0]["gpus_p95"], rows[0]["gpus_x"]) == (17, None, 25)
    rows = with_case_columns([row], [case("x", 15, "")])  # no bound: as computed
    assert rows[0]["gpus_x"] == 15
