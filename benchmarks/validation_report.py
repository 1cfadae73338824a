"""Generate docs/validation.md: calibration fit, in-sample and out-of-sample validation, comparisons.

Usage (from the repository root; ~15-30 min on 2 cores):

    python benchmarks/validation_report.py [--jobs 2] [--cv-system-mode fast|full] [--out docs/validation.md]

Every number in the document is computed here from hardware_profiles/mlperf/results.csv and the simulator;
nothing is typed in. The calibration used for the in-sample section is fitted afresh on all rows (the same
fit `fleetsim calibrate` writes); the out-of-sample sections refit per fold.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from simulator import calibration, mlperf, replay, units, validation

MODELS = ("llama2-70b", "llama3.1-8b", "llama3.1-405b", "mixtral-8x7b", "gpt-oss-120b", "deepseek-r1")
SCENARIOS = ("offline", "server", "interactive")


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _stats_row(title: str, s: dict[str, Any]) -> str:
    within = f"{s['within_interval']:.0%}" if "within_interval" in s else "n/a"
    return (f"| {title} | {s['n']} | {s['n_predicted']} | {s['coverage']:.1%} | "
            f"{_fmt(s['median_ape_pct'])} | {_fmt(s['mean_ape_pct'])} | {_fmt(s['p90_ape_pct'])} | "
            f"{within} |")


def _summary_table(summary: dict[str, Any], title: str) -> list[str]:
    lines = [
        f"| {title} | rows | predicted | coverage | median APE % | mean APE % | p90 APE % | measured within "
        "p05-p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.append(_stats_row("**all**", summary["overall"]))
    if summary.get("excluding_blind_spots"):
        lines.append(_stats_row("all except blind spots", summary["excluding_blind_spots"]))
    clean_by_model = summary.get("excluding_blind_spots_by_model") or {}
    for label in ("by_model", "by_scenario", "by_accelerator"):
        for key, s in summary[label].items():
            if s["n_predicted"] == 0 and label != "by_accelerator":
                continue
            lines.append(_stats_row(f"{label[3:]}: {key}", s))
            if label == "by_model" and key in clean_by_model:
                lines.append(_stats_row(f"model: {key} except blind spots", clean_by_model[key]))
    return lines


def _profiled_coverage(result: dict[str, Any]) -> tuple[int, int]:
    """(predicted, rows) over rows whose accelerator fleetsim profiles (datacenter GPUs with a profile)."""
    rows = [r for r in result["rows"] if _profiled(r["accelerator"])]
    return sum(1 for r in rows if "ape_pct" in r), len(rows)


def _profiled(name: str) -> bool:
    if name.upper().startswith("MIXED"):
        return True
    return not isinstance(mlperf.accelerator_id(name), mlperf.Unsupported)


def _per_gpu(rows: list[dict[str, Any]], acc: str, scenario: str, key: str) -> float | None:
    vals = [
        r[key] / r["total_accelerators"]
        for r in rows
        if r.get("accelerator") == acc
        and r.get("model") == "llama2-70b"
        and r["scenario"].lower() == scenario
        and isinstance(r.get(key), (int, float))
        and "ape_pct" in r
    ]
    return statistics.median(vals) if vals else None


def ratio(x: float | None, y: float | None) -> float | None:
    """x / y, None when either is missing."""
    return x / y if x and y else None


def _comparison(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| pair | scenario | measured ratio | predicted ratio (in-sample) | "
        "predicted ratio (CV version) | measured tok/s/GPU (a / b) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for a, b in (("MI355X", "MI325X"), ("MI355X", "B200")):
        for sc in SCENARIOS:
            ma, mb = (_per_gpu(results["in"]["rows"], x, sc, "measured") for x in (a, b))
            pa, pb = (_per_gpu(results["in"]["rows"], x, sc, "predicted") for x in (a, b))
            ca, cb = (_per_gpu(results["version"]["rows"], x, sc, "predicted") for x in (a, b))
            lines.append(
                f"| {a} / {b} | {sc} | {_fmt(ratio(ma, mb), 2)} | {_fmt(ratio(pa, pb), 2)} | "
                f"{_fmt(ratio(ca, cb), 2)} | {_fmt(ma, 0)} / {_fmt(mb, 0)} |"
            )
    lines.append("")
    lines.append(
        "Per-GPU figures are medians over the deduplicated llama2-70b rows of each accelerator and "
        "scenario (all rounds); `n/a` where the data has no such row."
    )
    return lines


def _scaling(rows: list[mlperf.ResultRow], doc: dict[str, Any]) -> list[str]:
    cal, factors = doc["groups"], doc.get("model_factors", {})
    lines = [
        "| system | version | benchmark | scenario | GPUs (nodes x per node) | measured tok/s | "
        "measured 1-node ref | measured scaling | predicted scaling | predicted tok/s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    specs = [(r, mlperf.replay_spec(r)) for r in rows]
    for r, s in specs:
        if isinstance(s, mlperf.Unsupported) or s.nodes <= 1 or not r.measured:
            continue
        one_node = [
            x.measured
            for x, t in specs
            if not isinstance(t, mlperf.Unsupported)
            and x.measured
            and t.nodes == 1
            and t.total_gpus == s.gpus_per_node
            and t.accelerator_id == s.accelerator_id
            and t.model_id == s.model_id
            and t.scenario == s.scenario
            and x.version == r.version
            and len(t.parts) == 1
        ]
        if not one_node:  # any round
            one_node = [
                x.measured
                for x, t in specs
                if not isinstance(t, mlperf.Unsupported)
                and x.measured
                and t.nodes == 1
                and t.total_gpus == s.gpus_per_node
                and t.accelerator_id == s.accelerator_id
                and t.model_id == s.model_id
                and t.scenario == s.scenario
                and len(t.parts) == 1
            ]
        ref = statistics.median(one_node) if one_node else None
        measured = r.measured / (s.nodes * ref) if ref else None
        pred_sys = replay.predict(s, calibration=cal, model_factors=factors)
        single = replace(s, total_gpus=s.gpus_per_node, nodes=1, parts=((s.accelerator_id, s.gpus_per_node),))
        pred_one = replay.predict(single, calibration=cal, model_factors=factors)
        ok = "predicted" in pred_sys and "predicted" in pred_one and pred_one["predicted"] > 0
        scaling = pred_sys["predicted"] / (s.nodes * pred_one["predicted"]) if ok else None
        kind = " (NVL72 rack: trays)" if s.accelerator_id in ("gb200-nvl72", "gb300-nvl72") else ""
        lines.append(
            f"| {mlperf.system_key(r)[:60]} | {r.version} | {s.model_id} | {s.scenario} | "
            f"{s.total_gpus} ({s.nodes} x {s.gpus_per_node}){kind} | {_fmt(r.measured, 0)} | "
            f"{_fmt(ref, 0)} | {_fmt(measured, 3)} | {_fmt(scaling, 3)} | "
            f"{_fmt(pred_sys.get('predicted'), 0)} |"
        )
    lines.append("")
    lines.append(
        "Scaling efficiency = N-node throughput / (N x one-node throughput). Measured one-node "
        "reference: median of single-node results with the same accelerator, GPUs per node, benchmark "
        "and scenario in the same round (else any round). Predicted: the same system replayed with N "
        "nodes and with one node (in-sample calibration). Mixed systems compare against the node of "
        "their main part."
    )
    return lines


def _stability(cal: dict[str, Any]) -> list[str]:
    lines = [
        "| configuration | requests per replay | replay length (s) | rate found (req/s per replica) | "
        "p99 TTFT (s) | p99 TPOT (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    cases = [
        ("h200", "llama2-70b", "fp8", "trtllm", "server", 2.0, 0.2),
        ("mi355x", "llama2-70b", "fp4", "vllm", "interactive", 0.45, 0.04),
        ("b200", "deepseek-r1", "fp4", "trtllm", "server", 2.0, 0.08),
    ]
    for acc, model, prec, fw, sc, ttft, tpot in cases:
        key = replay.PartKey(acc, model, prec, fw, sc, 8, 8, ttft, tpot)
        best = replay.best_layout(key, cal)
        if best is None:
            continue
        dep, _, fast, _ = best
        lens = replay.lengths(model)
        rates = []
        base = replay.SERVER_TARGET_REQUESTS
        for n in (base, 2 * base, 4 * base):
            res = replay.simulate_server(dep, key, lens, fast, requests=n)
            rates.append(res.get("rate_per_s") or 0.0)
            lines.append(
                f"| {acc} {model} {sc} {dep.layout.label()} | {n} | "
                f"{_fmt(res.get('replay_duration_s'), 0)} | "
                f"{_fmt(res.get('rate_per_s'), 3)} | {_fmt(res.get('ttft_p99_s'), 3)} | "
                f"{_fmt(res.get('tpot_p99_s'), 4)} |"
            )
        spread = (max(rates) - min(rates)) / statistics.median(rates) if min(rates) > 0 else float("nan")
        lines.append(
            f"| ↳ spread of the rate found across lengths | | | {_fmt(units.frac_to_pct(spread))} % "
            f"({'stable' if spread < 0.05 else 'NOT stable: the default replay is too short'}) | | |"
        )
    return lines


def _params_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| key | level | rows | compute_frac | memory_frac | network_frac | step_overhead_ms | "
        "seq_overhead_us | median APE % (fit) | log-residual p05 / p95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, g in doc["groups"].items():
        p = g["params"]
        res = g.get("residuals", {})
        q = res.get("log_residual_quantiles", {})
        lines.append(
            f"| {key} | {g['provenance']['level']} | {g['n_rows']} | {p['compute_frac']:.3f} | "
            f"{p['memory_frac']:.3f} | {p['network_frac']:.3f} | {p['step_overhead_ms']:.2f} | "
            f"{p['seq_overhead_us']:.1f} | "
            f"{_fmt(res.get('median_ape_pct'))} | {_fmt(q.get('p05'), 3)} / {_fmt(q.get('p95'), 3)} |"
        )
    return lines


def _multipliers(offsets: dict[str, float]) -> str:
    """'v5.1 x0.69, v6.0 x1.19' from log offsets keyed by round."""
    return ", ".join(f"{v} x{math.exp(d):.2f}" for v, d in offsets.items())


def _factors_table(doc: dict[str, Any]) -> list[str]:
    """Per model: its factor, per-scenario factors, per-round offsets and per-(scenario, round) offsets,
    as x multipliers."""
    out = ["| model | rows | model | offline | server | interactive | round offsets | "
           "round offsets within a scenario |",
           "|---|---:|---:|---:|---:|---:|---|---|"]
    for model, entry in sorted(doc.get("model_factors", {}).items()):
        by = entry.get("by_scenario", {})
        cells = [f"x{math.exp(by[sc]):.2f}" if sc in by else ""
                 for sc in ("offline", "server", "interactive")]
        within = entry.get("by_scenario_version", {})
        nested = "; ".join(f"{sc}: {_multipliers(o)}" for sc, o in within.items())
        out.append(f"| {model} | {entry['n_rows']} | x{math.exp(entry['log_throughput_factor']):.2f} | "
                   f"{' | '.join(cells)} | {_multipliers(entry.get('by_version', {}))} | {nested} |")
    return out


def _fast_vs_full(result: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    """Full simulation / fast evaluator per model x scenario over the in-sample rows (calibration fits the
    fast one, validation and sizing run the simulation: they must agree): the raw ratio, the simulation
    correction the fit measured on its sample, and the ratio after it."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in result["rows"]:
        fast, full = r.get("predicted_fast"), r.get("predicted")
        if validation.finite(fast) and validation.finite(full) and fast > 0:
            groups.setdefault((r["model"], r["scenario"].lower()), []).append(full / fast)
    lines = ["| model | scenario | rows | raw median | raw min | raw max | correction | median after |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (model, scenario), xs in sorted(groups.items()):
        log_c = doc.get("model_factors", {}).get(model, {}).get("sim_correction", {}).get(scenario, 0.0)
        raw = [x / math.exp(log_c) for x in xs]
        lines.append(f"| {model} | {scenario} | {len(xs)} | {statistics.median(raw):.2f} | {min(raw):.2f} "
                     f"| {max(raw):.2f} | x{math.exp(log_c):.2f} | {statistics.median(xs):.2f} |")
    return lines


def _row_id(r: Any) -> tuple:
    get = (lambda k: r[k]) if isinstance(r, dict) else (lambda k: getattr(r, k))
    return tuple(get(k) for k in ("version", "submitter", "system_name", "benchmark", "scenario"))


def _peer_spread(rows: list[mlperf.ResultRow], results: dict[str, dict[str, Any]]) -> list[str]:
    """How far apart submissions of one configuration land: per model, each row that has a peer (another
    submitter's row of the same benchmark, scenario, round, accelerator and GPU count) predicted by the
    peers' median measured value, against fleetsim's errors on the same rows."""
    groups: dict[tuple, list[mlperf.ResultRow]] = {}
    for r in rows:
        if r.measured and r.measured > 0:
            groups.setdefault((r.benchmark, r.scenario, r.version, r.accelerator, r.total_accelerators),
                              []).append(r)
    ape = {name: {_row_id(x): x["ape_pct"] for x in res["rows"] if validation.finite(x.get("ape_pct"))}
           for name, res in results.items()}
    per_model: dict[str, dict[str, list[float]]] = {}
    for members in groups.values():
        for r in members:
            peers = [p.measured for p in members if p.submitter != r.submitter]
            spec = mlperf.replay_spec(r)
            if not peers or isinstance(spec, mlperf.Unsupported) or _row_id(r) not in ape["in"]:
                continue
            entry = per_model.setdefault(spec.model_id, {"peers": []})
            entry["peers"].append(mlperf.ape_pct(r.measured, statistics.median(peers)))
            for name in ("system", "in"):
                if _row_id(r) in ape.get(name, {}):
                    entry.setdefault(name, []).append(ape[name][_row_id(r)])
    lines = ["| model | rows with a peer | peers' median: median / p90 APE % | fleetsim leave-one-system-out "
             "| fleetsim in-sample (full) |", "|---|---:|---:|---:|---:|"]
    for model, entry in sorted(per_model.items()):
        lines.append(f"| {model} | {len(entry['peers'])} | {_ape_cell(entry['peers'])} | "
                     f"{_ape_cell(entry.get('system'))} | {_ape_cell(entry.get('in'))} |")
    return lines


def _round_drift(rows: list[mlperf.ResultRow], results: dict[str, dict[str, Any]]) -> list[str]:
    """How far results move between rounds on one configuration: per model, each row whose configuration
    (model, scenario, accelerator, GPU count) was measured in an earlier round, predicted by the median
    measured value of the latest such round (a forecast that knows the hardware and assumes the software
    stood still), against fleetsim's fit-on-older-rounds errors on the same rows."""
    configs: dict[tuple, dict[str, list[float]]] = {}
    specs = {}
    for r in rows:
        spec = mlperf.replay_spec(r)
        if r.measured and r.measured > 0 and not isinstance(spec, mlperf.Unsupported):
            specs[_row_id(r)] = key = (spec.model_id, spec.scenario, r.accelerator, r.total_accelerators)
            configs.setdefault(key, {}).setdefault(r.version, []).append(r.measured)
    version_ape = {_row_id(x): x["ape_pct"] for x in results["version"]["rows"]
                   if validation.finite(x.get("ape_pct"))}
    per_model: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        key = specs.get(_row_id(r))
        if key is None:
            continue
        older = [v for v in configs[key] if mlperf.version_key(v) < mlperf.version_key(r.version)]
        entry = per_model.setdefault(key[0], {"persist": [], "fleetsim": [], "new": []})
        if not older:
            if _row_id(r) in version_ape:
                entry["new"].append(version_ape[_row_id(r)])
            continue
        latest = max(older, key=mlperf.version_key)
        entry["persist"].append(mlperf.ape_pct(r.measured, statistics.median(configs[key][latest])))
        if _row_id(r) in version_ape:
            entry["fleetsim"].append(version_ape[_row_id(r)])
    lines = ["| model | rows measured before on the same configuration | previous round's median: median / "
             "p90 APE % | fleetsim fit-on-older-rounds, same rows | rows of a configuration new in its round "
             "| fleetsim fit-on-older-rounds on them |", "|---|---:|---:|---:|---:|---:|"]
    for model, entry in sorted(per_model.items()):
        lines.append(f"| {model} | {len(entry['persist'])} | {_ape_cell(entry['persist'])} | "
                     f"{_ape_cell(entry['fleetsim'])} | {len(entry['new'])} | {_ape_cell(entry['new'])} |")
    return lines


def _ape_cell(xs: list[float] | None) -> str:
    """'median / p90' of absolute percentage errors, or 'n/a'."""
    return f"{np.median(xs):.1f} / {np.percentile(xs, 90):.1f}" if xs else "n/a"


def _blind(result: dict[str, Any]) -> list[str]:
    lines = [
        "| version | system | benchmark | scenario | measured | predicted | APE % | blind spot |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        if r.get("blind_spots") and "ape_pct" in r:
            lines.append(
                f"| {r['version']} | {r['submitter']} / {r['system_name'][:45]} | {r['benchmark']} | "
                f"{r['scenario']} | {_fmt(r['measured'], 0)} | {_fmt(r['predicted'], 0)} | "
                f"{_fmt(r['ape_pct'])} | {'; '.join(r['blind_spots'])} |"
            )
    return lines


def _compute(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Everything the document shows: the fit, the validations, the scaling and stability tables, and the
    time each took (the payload ``--json-out`` saves and ``--from-json`` renders)."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    rows = mlperf.deduplicate(mlperf.load_results())
    doc = calibration.fit(rows, source=calibration.results_digest(None), log=log, simulation_bridge=True,
                          jobs=args.jobs)
    timings["calibrate (fit on all rows)"] = time.monotonic() - t0
    tmp_cal = Path(args.out).with_suffix(".calibration.tmp.yaml")
    calibration.write(doc, tmp_cal)
    results: dict[str, dict[str, Any]] = {}
    try:
        t0 = time.monotonic()
        results["in"] = validation.validate(calibration_path=tmp_cal, jobs=args.jobs, log=log)
        timings["validate in-sample (full simulation)"] = time.monotonic() - t0
    finally:
        tmp_cal.unlink(missing_ok=True)
    log("in-sample done")
    t0 = time.monotonic()
    results["version"] = validation.validate(cv="version", jobs=args.jobs, log=log)
    timings["validate --cv version (full simulation)"] = time.monotonic() - t0
    t0 = time.monotonic()
    results["scale"] = validation.validate(cv="scale", jobs=args.jobs, log=log)
    timings["validate --cv scale (full simulation)"] = time.monotonic() - t0
    if not args.skip_cv_system:
        t0 = time.monotonic()
        results["system"] = validation.validate(
            cv="system", mode=args.cv_system_mode, jobs=args.jobs, log=log
        )
        timings[f"validate --cv system ({args.cv_system_mode} evaluator)"] = time.monotonic() - t0
    t0 = time.monotonic()
    scaling = _scaling(rows, doc)
    stability = _stability(doc["groups"])
    timings["scaling + stability tables"] = time.monotonic() - t0
    return {"results": results, "calibration": doc, "scaling": scaling, "stability": stability,
            "timings": timings, "cv_system_mode": args.cv_system_mode}


def _scale_section(result: dict[str, Any]) -> list[str]:
    """The fit-on-small-systems section: one fold, larger systems held out."""
    fold = result["folds"][0] if result["folds"] else {"held_out": "none", "n_train": 0, "n_test": 0}
    return [
        "## Out-of-sample: fit on systems of at most "
        f"{mlperf.SCALE_TRAIN_MAX_GPUS} GPUs, predict the larger ones (`validate --cv scale`)",
        "",
        *_summary_table(result["summary"], "larger systems the fit never saw"),
        "",
        f"One fold: train {fold['n_train']} rows of systems with at most {mlperf.SCALE_TRAIN_MAX_GPUS} "
        f"accelerators, test {fold['n_test']} rows of the larger ones ({fold['held_out']}: multi-node "
        "clusters and NVL72 racks). The training rows are listed as not predicted, so 'coverage' here is "
        "the share of rows held out; what is extrapolated is the cost of scale (network hops, load "
        "imbalance, the tail of the run, layouts only a rack allows), not new hardware: each held-out "
        "system's accelerator also comes in systems of 8 GPUs or fewer.",
        "",
    ]


def _render(payload: dict[str, Any]) -> list[str]:
    """The markdown lines of docs/validation.md from a ``_compute`` payload."""
    results, doc, timings = payload["results"], payload["calibration"], payload["timings"]
    scaling, stability, cv_system_mode = payload["scaling"], payload["stability"], payload["cv_system_mode"]
    rows = mlperf.deduplicate(mlperf.load_results())
    out: list[str] = [
        "# Validation against MLPerf Inference results",
        "",
        "Generated by `python benchmarks/validation_report.py` (do not edit by hand) from "
        f"`{calibration.results_digest(None)}`.",
        "",
    ]
    out += [
        "## How predictions are made",
        "",
        "Each row is replayed from its descriptive columns only (`simulator/replay.py`): the benchmark's "
        "model and token lengths, format and framework family, the accelerator and GPU count (an NVL72 rack "
        "is one NVLink domain, a mixed system is the sum of its parts), and the layout (TP 1/2/4/8, EP and "
        "attention-DP for MoE, PP 2 only when nothing else fits) with the highest predicted throughput per "
        "GPU (full simulation: the up to 3 layouts within 10% of the best by the fast evaluator are each "
        "simulated and the best simulated kept); in Interactive on systems larger than one 8-GPU node "
        "also every split of the GPUs into "
        "prefill and decode replicas (disaggregated serving, `simulator/disaggregation.py`), kept when it "
        "beats aggregated serving. "
        "Offline: N requests at t = 0 in the discrete-event simulation; the steady rate and the drain "
        "of the last batch are amortised over an MLPerf-length run (>= 600 s and >= the min query count), "
        "plus the imbalance of statically fed replicas. Server / Interactive: LoadGen-like search on the "
        "Poisson rate of one replica for the highest rate whose run meets both p99 limits. Calibration "
        "(`simulator/calibration.py`) fits compute_frac, memory_frac, step_overhead_ms and seq_overhead_us "
        "(a cost per decoding sequence per step) per accelerator x "
        "format x framework (network_frac per vendor), pooled vendor -> architecture -> group with "
        "shrinkage, on a fast steady-state evaluator built from the same `StepModel`. On top, per "
        "benchmark model: a log throughput factor per scenario (shrunk toward the model's), an offset "
        "per MLPerf round and one per round within a scenario (both shrunk toward 0; a round not fitted "
        "takes the nearest older one, a newer round the latest). They stand for what the rooflines miss "
        "for a model's kernels and serving regime "
        "(MoE grouped GEMMs at small per-expert batches, MLA, attention sinks, how far real speculative "
        "decoding departs from the assumed acceptance) and for software maturing between rounds; they are "
        "empirical, not "
        "physics, and are listed below. The simulation's own bias against the fast evaluator is measured "
        "by the fit per model and scenario and corrected (see 'Fast evaluator vs simulation'). Sizing "
        "applies the model's Server factor plus the latest round's offsets and the simulation correction "
        "of the MLPerf scenario whose p99 TPOT limit is nearest to the sizing's the same way: a replica "
        "carrying a real rate is simulated at rate / factor and its tokens/s multiplied back.",
        "",
        "Every prediction carries the interval sizing reports as `gpus_p05`-`gpus_p95`: the prediction "
        "times exp of the calibration's 5th and 95th percentile log residuals, at each end the wider of "
        "the accelerator group's rows and the benchmark model's rows (`uncertainty.residual_bounds`), "
        "widened, for a group or model the calibration has no rows of, to how far fits on older rounds "
        "missed newer rounds' new hardware or new models (`calibration.forecast_residuals`, computed by "
        "the full calibration and by each fit-on-older-rounds fold, not by the leave-one-system-out "
        "folds). "
        "'measured within p05-p95' is how often the measured value fell inside it (nominal 90%); in the "
        "cross-validations each fold's own calibration sets the interval, so it is tested on rows that "
        "calibration never saw.",
        "",
    ]
    out += ["## Out-of-sample: fit on older rounds, predict each newer round (`validate --cv version`)", ""]
    out += _summary_table(results["version"]["summary"], "rows the fit never saw")
    out += [
        "",
        "Folds: "
        + ", ".join(
            f"{f['held_out']} (train {f['n_train']}, test {f['n_test']})" for f in results["version"]["folds"]
        )
        + ". The oldest round has nothing older to train on; its rows count as not predicted.",
        "",
    ]
    if "scale" in results:   # payloads saved before the scale fold existed render without it
        out += _scale_section(results["scale"])
    if "system" in results:
        out += [
            "## Out-of-sample: leave one system out "
            f"(`validate --cv system`, {cv_system_mode} evaluator)",
            "",
        ]
        out += _summary_table(results["system"]["summary"], "rows the fit never saw")
        if cv_system_mode == "fast":
            out += [
                "",
                f"{len(results['system']['folds'])} folds, each a full refit. Predictions here use the "
                "fast steady-state evaluator (a full simulation per fold would take hours); the in-sample "
                "section shows how the full simulation compares.",
                "",
            ]
    out += [
        "## How far apart submissions of one configuration land",
        "",
        "A floor for any predictor of the descriptive columns: each row that has a peer (another "
        "submitter's result for the same benchmark, scenario, round, accelerator and GPU count) is "
        "'predicted' by the median of its peers' measured values. Where that already misses by tens of "
        "percent, the columns do not determine the result (software, tuning, speculative decoding, "
        "disaggregation); fleetsim's errors on the same rows are beside it.",
        "",
        *_peer_spread(rows, results),
        "",
        "## How far results move between rounds on one configuration",
        "",
        "A floor for predicting a newer round: each row whose configuration (model, scenario, accelerator, "
        "GPU count) was measured in an earlier round is 'predicted' by the median measured value of the "
        "latest such round, a forecast that knows the hardware exactly and assumes the software stood "
        "still. Where that misses by tens of percent, software moved between rounds by that much, which no "
        "fit on older rounds can foresee; fleetsim's fit-on-older-rounds errors on the same rows are beside "
        "it.",
        "",
        *_round_drift(rows, results),
        "",
    ]
    out += ["## In-sample: calibration fitted on all rows, full simulation", ""]
    out += _summary_table(results["in"]["summary"], "all rows (fit saw them)")
    pred, total = _profiled_coverage(results["in"])
    out += [
        "",
        f"Coverage of rows of datacenter GPUs with a fleetsim profile: {pred} / {total} = "
        f"{pred / total:.1%} (the rest: the vision-language benchmark).",
        "",
    ]
    out += [
        "## Fast evaluator vs simulation",
        "",
        "Calibration fits the fast steady-state evaluator; validation and sizing run the simulation, so "
        "the two must agree. Ratio of the two predictions per in-sample row (simulation / fast; model "
        "factors included in both). Raw: the simulation as it comes. Offline differs by the drain and "
        "imbalance the simulation plays out; Server and Interactive by how the fast rule stands in for the "
        "simulated p99 TPOT (llama2-70b Interactive: prompts arrive Poisson, a step holding two or three "
        "turns compute-bound and the step is convex in its prefill, a Jensen gap the mean-step rule does "
        "not see). The fit measures this bias on a systematic sample of 5 rows per model and scenario "
        "(median of fast / simulated) and multiplies simulated predictions and sizing runs by it "
        "(`sim_correction`; one per model and scenario, so what varies by accelerator within a scenario "
        "stays: see the raw min and max).",
        "",
        *_fast_vs_full(results["in"], doc),
        "",
    ]
    out += ["## Published comparisons: Llama 2 70B throughput per GPU", "", *_comparison(results), ""]
    out += ["## Multi-node scaling efficiency", "", *scaling, ""]
    out += [
        "## Replay length: is the p99 stable?",
        "",
        "MLPerf Server runs last >= 600 s; replays are shorter (validation uses "
        f"{replay.SERVER_TARGET_REQUESTS} requests after warm-up, at least {replay.SERVER_MIN_RUN_S:.0f} s). "
        "The rate search is repeated with the default replay length and with two and four times as many "
        "requests; the spread of the rate found says whether the default length is long enough:",
        "",
    ]
    out += [*stability, ""]
    out += [
        "## Where the model is blind",
        "",
        "- Speculative decoding (allowed for DeepSeek-R1 and gpt-oss-120b Interactive, reference MTP / "
        "EAGLE heads with 3 drafts): every layout is replayed with and without it and the best is kept, "
        "with an acceptance length assumed from public figures (2.8 / 2.3 tokens per step, the same for "
        "every request). Whether a submission drafted is not in its descriptive columns, and its real "
        "acceptance is unknown: on gpt-oss-120b the same rule over-predicts some 8-GPU rows ~3x and "
        "under-predicts the NVL72 rows.",
        "- Software that improves between rounds (DeepSeek-R1 Server per B200 went from ~1.8k to ~5.1k "
        "tokens/s/GPU between v5.1 and v6.0 on the same GPUs): known only through the round offsets fitted "
        "on past rounds; a newer round is predicted with the latest offset, so a further jump is missed.",
        "- Disaggregated prefill/decode serving: whether a submission split its GPUs is not in its "
        "columns (only Dynamo-listed rows say so); the replay splits an Interactive system larger than one "
        "8-GPU node where the split beats aggregated serving, never an 8-GPU box or a Server / Offline "
        "run, and flags a Dynamo-listed row it did not split.",
        "- Rows it cannot replay at all are listed as unsupported with the reason (vision-language "
        "benchmark, unprofiled accelerators such as RTX PRO, L40S, GH200, H100/H200 NVL PCIe, Intel Arc).",
        "",
        "Rows with a blind spot (in-sample predictions):",
        "",
        *_blind(results["in"]),
        "",
    ]
    out += ["## Calibrated parameters (fit on all rows)", "", *_params_table(doc), ""]
    out += ["## Model factors (fit on all rows; log throughput multipliers)", "", *_factors_table(doc), ""]
    out += ["## Runtime (this machine)", "", "| step | seconds |", "|---|---:|"]
    out += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cv-system-mode", choices=("fast", "full"), default="fast")
    parser.add_argument("--skip-cv-system", action="store_true")
    parser.add_argument("--json-out", default=None, help="also save everything computed as JSON here")
    parser.add_argument("--from-json", default=None,
                        help="render the document from a --json-out file instead of recomputing")
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "validation.md")
    )
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.from_json:
        payload = json.loads(Path(args.from_json).read_text())
    else:
        payload = _compute(args, log)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(payload, default=str))
    Path(args.out).write_text("\n".join(_render(payload)) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
