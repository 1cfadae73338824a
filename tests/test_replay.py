"""Replay of MLPerf rows: layouts, fast and full predictions, independence from measured columns, CV folds."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import pytest

from simulator import calibration, mlperf, replay, validation
from simulator.data import profiles_dir
from simulator.deployment import Layout, make_deployment, plan_memory
from simulator.iteration import StepModel

SHIPPED = profiles_dir() / "mlperf" / "results.csv"
SMALL_SYSTEM = "Dell PowerEdge XE8640 (1xH100-SXM-80GB, vLLM)"   # 1x H100 llama3.1-8b Offline + Server


def _raw() -> tuple[list[str], list[dict[str, str]]]:
    with SHIPPED.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(system: str, scenario: str) -> mlperf.ResultRow:
    rows = mlperf.deduplicate(mlperf.load_results())
    return next(r for r in rows if r.system_name == system and r.scenario == scenario)


def test_offline_replay_of_a_tiny_config_runs_and_is_positive() -> None:
    spec = mlperf.replay_spec(_row(SMALL_SYSTEM, "Offline"))
    assert not isinstance(spec, mlperf.Unsupported)
    full = replay.predict(spec, calibration={}, mode="full")
    fast = replay.predict(spec, calibration={}, mode="fast")
    assert full["predicted"] > 0 and fast["predicted"] > 0
    # the simulation and the steady-state evaluator price the same steps: they agree within 25%
    assert 0.75 < full["predicted"] / fast["predicted"] < 1.25
    part = full["parts"][0]
    assert part["layout"] == "TP1" and part["replicas"] == 1
    assert part["drain_lost_s"] >= 0 and part["replay_duration_s"] > 0


def test_layouts_fit_in_memory_and_respect_the_node() -> None:
    key = replay.PartKey("h100", "llama3.1-405b", "fp8", "trtllm", "offline", 8, 8, None, None)
    cands = replay.candidates(key)
    assert cands and all(plan.fits for _, plan in cands)
    assert all(dep.layout.tp * dep.layout.pp <= 8 and dep.layout.tp <= 8 for dep, _ in cands)
    assert all(dep.layout.tp >= 4 for dep, _ in cands)  # 405 GB of fp8 weights need >= 4 H100s


def test_server_prediction_never_exceeds_the_steady_offline_rate() -> None:
    off = replay.PartKey("h200", "llama2-70b", "fp8", "trtllm", "offline", 8, 8, None, None)
    offline = replay.predict_part(off, 8, {}, "fast")
    steady = offline["fast_replica_tokens_per_s"] * offline["replicas"]
    assert 0 < offline["run_factor"] <= 1 and offline["tokens_per_s"] <= steady
    for scenario, limits in (("server", (2.0, 0.2)), ("interactive", (0.45, 0.04))):
        key = replay.PartKey("h200", "llama2-70b", "fp8", "trtllm", scenario, 8, 8, *limits)
        # per GPU: a server replica never beats the best steady offline replica
        part = replay.predict_part(key, 8, {}, "fast")
        assert part["tokens_per_s"] / 8 <= steady / 8 * 1.0001


def test_prediction_does_not_change_when_measured_columns_change(tmp_path: Path) -> None:
    header, rows = _raw()
    picked = [r for r in rows if r["system_name"] == SMALL_SYSTEM]
    assert len(picked) == 2
    base = validation.validate(_write(tmp_path / "a.csv", header, picked), mode="fast")
    altered = []
    for r in picked:
        r = dict(r)
        for column in mlperf.MEASURED_COLUMNS:
            if column in r:
                r[column] = "123.5" if column != "result_unit" else "bogus"
        altered.append(r)
    changed = validation.validate(_write(tmp_path / "b.csv", header, altered), mode="fast")
    stripped_header = [c for c in header if c not in mlperf.MEASURED_COLUMNS]
    stripped = [{k: v for k, v in r.items() if k in stripped_header} for r in picked]
    removed = validation.validate(_write(tmp_path / "c.csv", stripped_header, stripped), mode="fast")
    preds = [[r["predicted"] for r in res["rows"]] for res in (base, changed, removed)]
    assert preds[0] == preds[1] == preds[2]
    assert all("unsupported" in r for r in removed["rows"])  # no measured value: listed, not scored
    # the full simulation is invariant too (one row keeps this fast)
    one = [r for r in picked if r["scenario"] == "Offline"]
    one_altered = [r for r in altered if r["scenario"] == "Offline"]
    full_a = validation.validate(_write(tmp_path / "d.csv", header, one))["rows"][0]["predicted"]
    full_b = validation.validate(_write(tmp_path / "e.csv", header, one_altered))["rows"][0]["predicted"]
    assert full_a == full_b


def test_unsupported_rows_are_listed_with_a_reason(tmp_path: Path) -> None:
    header, rows = _raw()
    picked = [r for r in rows if r["accelerator"] in ("L40S", "GH200")][:3]
    picked += [r for r in rows if r["system_name"] == SMALL_SYSTEM][:1]
    res = validation.validate(_write(tmp_path / "u.csv", header, picked), mode="fast")
    assert len(res["rows"]) == len(picked)
    assert sum(1 for r in res["rows"] if r.get("unsupported")) == len(picked) - 1
    assert res["summary"]["coverage"] == pytest.approx(1 / len(picked))
    for r in res["rows"]:
        assert {"version", "submitter", "system_name", "accelerator", "total_accelerators", "benchmark",
                "scenario"} <= r.keys()


def test_cv_never_trains_on_the_held_out_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header, rows = _raw()
    picked = [r for r in rows if r["accelerator"] == "H100" and r["benchmark"].startswith("llama3.1-8b")]
    picked += [r for r in rows if r["accelerator"] == "H100" and r["benchmark"].startswith("mixtral")][:6]
    path = _write(tmp_path / "cv.csv", header, picked)
    seen: list[set[tuple]] = []

    def fake_fit(train_rows, source="", log=None, use_model_factors=True, simulation_bridge=False,
                 jobs=1):  # records training rows
        seen.append({(r.version, r.system_name, r.benchmark, r.scenario) for r in train_rows})
        return {"groups": {}}

    monkeypatch.setattr(calibration, "fit", fake_fit)
    for cv in ("version", "system"):
        seen.clear()
        res = validation.validate(path, cv=cv, mode="fast")
        folds = res["folds"]
        assert len(folds) == len(seen) > 0
        for fold, train in zip(folds, seen, strict=True):
            held = {(r["version"], r["system_name"], r["benchmark"], r["scenario"])
                    for r in res["rows"] if r.get("fold") == fold["held_out"]}
            assert held and not (held & train)


def test_full_validation_rows_carry_the_fast_prediction_calibration_fits() -> None:
    """A full-simulation row also reports the fast evaluator's prediction of the same row, for the
    report's consistency table; it equals what ``--mode fast`` predicts."""
    row = _row(SMALL_SYSTEM, "Server")
    doc = calibration.load_calibration()
    full = validation.predict_row(row, doc, mode="full")
    fast = validation.predict_row(row, doc, mode="fast")
    assert full["predicted_fast"] == pytest.approx(fast["predicted"], rel=1e-6)
    assert "predicted_fast" not in fast
    assert 0.75 < full["predicted"] / full["predicted_fast"] < 1.25


def test_offline_replay_measures_the_steady_rate_at_the_full_batch() -> None:
    """An Offline replay feeds six batches' worth of requests, so its steady rate is the full batch's: a
    gpt-oss-120b TP2 replica on B300 holds 4,634 sequences (KV-bound, max_num_seqs raised) and the
    simulated steady rate is within 5% of the fast rule's at that batch (a 6000-request replay measured
    the ramp: x0.86)."""
    dep = make_deployment("gpt-oss-120b", "b300", "fp4", Layout(tp=2), max_num_seqs=16384)
    plan, lens = plan_memory(dep), replay.lengths("gpt-oss-120b")
    batch = replay.max_batch(dep, plan, lens)
    assert batch > 4000
    fast = batch / replay.mean_step_s(StepModel(dep), dep, batch, lens)
    out = replay.simulate_offline(dep, plan, lens, fast)
    assert out["replay_requests"] == 6 * batch
    assert out["steady_tokens_per_s"] == pytest.approx(fast, rel=0.05)


def test_simulation_correction_applies_to_the_simulated_prediction_only() -> None:
    """A model's ``sim_correction`` for the row's scenario multiplies the full-simulation prediction by
    exp(correction); the fast prediction (what calibration fits) is unchanged, as is any other scenario."""
    spec = mlperf.replay_spec(_row(SMALL_SYSTEM, "Server"))
    cal = calibration.calibration_dict(calibration.load_calibration())
    plain = replay.predict(spec, cal, mode="full", model_factors={})
    factors = {spec.model_id: {"sim_correction": {"server": 0.1, "offline": -0.5}}}
    corrected = replay.predict(spec, cal, mode="full", model_factors=factors)
    assert corrected["predicted"] == pytest.approx(plain["predicted"] * math.exp(0.1), rel=1e-12)
    assert corrected["predicted_fast"] == pytest.approx(plain["predicted_fast"], rel=1e-12)
    fast = replay.predict(spec, cal, mode="fast", model_factors=factors)
    assert fast["predicted"] == pytest.approx(plain["predicted_fast"], rel=1e-12)


@pytest.mark.parametrize(
    "key",
    [replay.PartKey("h200", "llama2-70b", "fp8", "trtllm", "offline", 8, 8, None, None),
     replay.PartKey("b200", "deepseek-r1", "fp4", "trtllm", "server", 8, 8, 2.0, 0.08),
     replay.PartKey("mi355x", "gpt-oss-120b", "fp4", "vllm", "interactive", 8, 8, 0.5, 0.01),
     replay.PartKey("h100", "mixtral-8x7b", "fp8", "trtllm", "offline", 8, 8, None, None),
     replay.PartKey("b200", "llama3.1-405b", "fp4", "trtllm", "server", 8, 8, 6.0, 0.175)],
)
@pytest.mark.parametrize("band", [1.0, 0.9, 0.5])
def test_ranked_layouts_skip_only_layouts_that_cannot_make_the_band(key: replay.PartKey, band: float) -> None:
    """Pricing every layout with ``fast_replica`` and keeping those scoring at least ``band`` x the best, best
    first (ties in candidate order), gives ``ranked_layouts`` (which skips layouts whose ceiling is below the
    band); its first is ``best_layout``."""
    lens = replay.lengths(key.model_id)
    scored = []
    for i, (dep, plan) in enumerate(replay.candidates(key)):
        d = replace(dep, efficiency=replay.efficiency_for(key.accelerator_id, dep.compute_family,
                                                          dep.framework, {}))
        steady, lost = replay.fast_replica(d, plan, key, lens)
        score = steady * replay.MLPERF_RUN_S / (replay.MLPERF_RUN_S + lost) / d.layout.gpus
        scored.append((score, i, (d, plan, steady, lost)))
    best_score = max(s for s, _, _ in scored)
    assert best_score > 0
    expected = [c for s, _, c in sorted(scored, key=lambda t: (-t[0], t[1])) if s >= band * best_score]
    assert replay.ranked_layouts(key, {}, band) == expected
    assert replay.best_layout(key, {}) == expected[0]


def test_full_mode_keeps_the_best_simulated_of_the_near_tied_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full mode simulates up to ``FULL_LAYOUTS`` layouts in the band and keeps the highest simulated
    tokens/s, whatever their fast order; the part's fast figure stays the fast-best layout's (what the fast
    evaluator predicts), so the simulation correction compares like with like."""
    key = replay.PartKey("b200", "llama3.1-405b", "fp4", "trtllm", "server", 8, 8, 6.0, 0.175)
    monkeypatch.setattr(replay, "FULL_LAYOUT_BAND", 0.01)   # a wide band: every layout that runs is in it
    ranked = replay.ranked_layouts(key, {}, replay.FULL_LAYOUT_BAND)
    assert len(ranked) >= 2
    tried = ranked[:replay.FULL_LAYOUTS]
    # simulated rate per replica: the fast order reversed, the last tried layout best per GPU
    fake = {c[0].layout: 100.0 * (k + 1) * c[0].layout.gpus for k, c in enumerate(tried)}
    monkeypatch.setattr(replay, "_simulated",
                        lambda dep, *a, **k: {"steady_tokens_per_s": fake[dep.layout], "rate_per_s": 1.0})
    part = replay.predict_part(key, 8, {}, "full")
    winner = tried[-1][0]
    assert part["layout"] == winner.layout.label()
    assert part["tokens_per_s"] == pytest.approx(100.0 * len(tried) * 8)
    assert set(part["layouts_simulated"]) == {c[0].layout.label() for c in tried}
    assert part["fast_tokens_per_s"] == pytest.approx(replay.predict_part(key, 8, {}, "fast")["tokens_per_s"])
