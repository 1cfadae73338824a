"""Validate predictions against measured MLPerf rows, in-sample or out-of-sample (cross-validation).

``validate`` predicts every row of a results CSV from its descriptive columns only (``mlperf.replay_spec``
-> ``replay.predict`` with the full simulation by default) and scores it against the measured value. Each
prediction carries the interval sizing reports (``predicted_p05`` / ``predicted_p95``: the prediction times
exp of the calibration's residual quantiles, ``uncertainty.residual_bounds``); the summary's
``within_interval`` says how often the measured value fell inside it (nominal 90%; out of sample, in a CV
fold, the fold's own calibration sets it).
Rows that cannot be modelled are listed with the reason (``unsupported``), never dropped. With ``cv``:

- ``version``: for each round, fit the calibration on the strictly older rounds (``calibration.fit``) and
  predict that round; the oldest round has no training data, so its rows are listed as unsupported.
- ``system``: for each system (submitter + name), fit on all other systems' rows and predict its rows.
- ``scale``: fit on systems of at most ``mlperf.SCALE_TRAIN_MAX_GPUS`` accelerators and predict every larger
  one (multi-node clusters, NVL72 racks): extrapolation in system size. The smaller systems' rows are listed
  as unsupported (trained on, never held out).

The row's measured columns are read only to score (``measured``, ``ape_pct``), after the prediction.
Returns plain dicts: {"rows": [...], "summary": mlperf.summarize_errors(rows) + extras, "folds": [...]}.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from simulator import calibration, mlperf, replay, uncertainty
from simulator.errors import InputError

ECHO = ("version", "submitter", "system_name", "accelerator", "total_accelerators", "benchmark", "scenario")
SPLITTERS: dict[str, Callable[[Sequence[mlperf.ResultRow]], list[mlperf.Fold]]] = {
    "version": mlperf.cv_splits_by_version, "system": mlperf.cv_splits_by_system,
    "scale": mlperf.cv_splits_by_scale}
CV_CHOICES = tuple(SPLITTERS)
NOT_HELD_OUT = {"version": "oldest round, nothing older to train on", "system": "nothing else to train on",
                "scale": f"a training row (at most {mlperf.SCALE_TRAIN_MAX_GPUS} accelerators)"}


def _echo(row: mlperf.ResultRow) -> dict[str, Any]:
    return {k: getattr(row, k) for k in ECHO}


def predict_row(row: mlperf.ResultRow, doc: dict[str, Any], mode: str = "full") -> dict[str, Any]:
    """Prediction for one row from its descriptive columns (``measured`` is not read here)."""
    spec = mlperf.replay_spec(row)
    out: dict[str, Any] = _echo(row)
    if isinstance(spec, mlperf.Unsupported):
        return {**out, "unsupported": spec.reason}
    out["model"] = spec.model_id
    pred = replay.predict(spec, calibration=doc.get("groups", {}), mode=mode,
                          model_factors=doc.get("model_factors", {}))
    if "unsupported" in pred:
        return {**out, "unsupported": pred["unsupported"]}
    part = pred["parts"][0]
    bounds = uncertainty.residual_bounds(doc, part["group"], part["architecture"], spec.model_id)
    out.update({"predicted": round(pred["predicted"], 3),
                "predicted_p05": round(pred["predicted"] * math.exp(bounds.low), 3),
                "predicted_p95": round(pred["predicted"] * math.exp(bounds.high), 3),
                "layout": " + ".join(p["layout"] for p in pred["parts"]),
                "replicas": sum(p["replicas"] for p in pred["parts"]), "blind_spots": pred["blind_spots"],
                "efficiency_source": part["efficiency_source"]})
    for name in ("ttft_p99_s", "tpot_p99_s", "replay_duration_s"):
        if name in part:
            out[f"predicted_{name}"] = part[name]
    if mode == "full":   # the steady-state evaluator calibration fits with, for the consistency check
        out["predicted_fast"] = round(pred["predicted_fast"], 3)
    return out


def score(pred: dict[str, Any], row: mlperf.ResultRow) -> dict[str, Any]:
    """Attach measured / ape_pct to a prediction (rows without a measured value are listed, not scored)."""
    if "unsupported" in pred:
        return pred
    if row.measured is None or not (row.measured > 0):
        return {**pred, "measured": None, "unsupported": "no measured result in this row (predicted only)"}
    ape = mlperf.ape_pct(row.measured, pred["predicted"])
    return {**pred, "measured": row.measured, "ape_pct": round(ape, 3)}


def _predict_many(rows: Sequence[mlperf.ResultRow], doc: dict[str, Any], mode: str,
                  jobs: int) -> list[dict[str, Any]]:
    if jobs <= 1 or len(rows) < 8:
        return [predict_row(r, doc, mode) for r in rows]
    # Spread distinct configurations over workers; rows sharing a configuration share a cached result.
    order = sorted(range(len(rows)), key=lambda i: _config_key(rows[i]))
    chunks = [order[k::jobs] for k in range(jobs)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_predict_chunk, [rows[i] for i in chunk], doc, mode) for chunk in chunks]
        results: list[dict[str, Any] | None] = [None] * len(rows)
        for chunk, fut in zip(chunks, futures, strict=True):
            for i, res in zip(chunk, fut.result(), strict=True):
                results[i] = res
    return [r for r in results if r is not None]


def _config_key(row: mlperf.ResultRow) -> str:
    spec = mlperf.replay_spec(row)
    if isinstance(spec, mlperf.Unsupported):
        return ""
    return "|".join(str(k) for k, _ in replay.part_keys(spec))


def _predict_chunk(rows: list[mlperf.ResultRow], doc: dict[str, Any],
                   mode: str) -> list[dict[str, Any]]:
    return [predict_row(r, doc, mode) for r in rows]


def _run_fold(task: tuple, jobs: int) -> tuple[list[dict[str, Any]], float]:
    """Fit on the fold's training rows only, then predict its held-out rows: (predictions, seconds)."""
    label, train_rows, test_rows, cv, mode, model_factors = task
    started = time.monotonic()
    try:
        doc = calibration.fit(train_rows, source=f"cv {cv}: all but {label}", use_model_factors=model_factors,
                              simulation_bridge=mode == "full", jobs=jobs)
    except InputError:
        doc = {}  # nothing usable to train on: uncalibrated defaults
    return _predict_many(test_rows, doc, mode, jobs), time.monotonic() - started


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = mlperf.summarize_errors(rows)
    clean = [r for r in rows if not r.get("blind_spots")]
    clean_summary = mlperf.summarize_errors(clean) if clean else {}
    summary["excluding_blind_spots"] = clean_summary.get("overall", {})
    blind_models = {mlperf.summary_model_key(r) for r in rows if r.get("blind_spots")}
    summary["excluding_blind_spots_by_model"] = {
        m: s for m, s in clean_summary.get("by_model", {}).items() if m in blind_models}
    summary["blind_spot_rows"] = sum(1 for r in rows if r.get("blind_spots") and "ape_pct" in r)
    return summary


def validate(results: str | Path | None = None, cv: str | None = None,
             calibration_path: str | Path | None = None, mode: str = "full", jobs: int = 1,
             log: Callable[[str], None] | None = None, model_factors: bool = True) -> dict[str, Any]:
    """Predict every row of ``results`` (default: the shipped CSV) and score it; see module docstring.

    ``calibration_path``: calibration YAML for in-sample validation (default the shipped one; ignored
    with ``cv``). ``mode``: 'full' (simulation) or 'fast' (steady-state evaluator). ``jobs``: worker
    processes for the simulations. ``model_factors``: fit per-model throughput factors in CV folds (see
    ``calibration``). Returns {"rows", "summary", "folds", "meta"}.
    """
    if cv is not None and cv not in CV_CHOICES:
        raise InputError(f"unknown cross-validation '{cv}'; valid choices: {', '.join(CV_CHOICES)}")
    if mode not in ("full", "fast"):
        raise InputError(f"unknown prediction mode '{mode}'; valid choices: full, fast")
    say = log or (lambda _m: None)
    started = time.monotonic()
    rows = mlperf.deduplicate(mlperf.load_results(results))
    folds_out: list[dict[str, Any]] = []
    if cv is None:
        doc = calibration.load_calibration(calibration_path)
        preds = _predict_many(rows, doc, mode, jobs)
        out_rows = [score(p, r) for p, r in zip(preds, rows, strict=True)]
    else:
        out_rows = [None] * len(rows)
        splits = SPLITTERS[cv](rows)
        tasks = [(label, [rows[i] for i in train], [rows[i] for i in test], cv, mode, model_factors)
                 for label, train, test in splits]
        if cv == "system" and jobs > 1:  # many small folds: one fold (fit + predictions) per worker task
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                outcomes = list(pool.map(_run_fold, tasks, [1] * len(tasks), chunksize=2))
        else:
            outcomes = [_run_fold(task, jobs) for task in tasks]
        for (label, train, test), (preds, seconds) in zip(splits, outcomes, strict=True):
            for i, p in zip(test, preds, strict=True):
                out_rows[i] = {**score(p, rows[i]), "fold": label}
            folds_out.append({"held_out": label, "n_train": len(train), "n_test": len(test),
                              "seconds": round(seconds, 1)})
            say(f"fold {label}: {len(test)} rows, {seconds:.1f} s")
        for i, r in enumerate(out_rows):
            if r is None:
                out_rows[i] = {**_echo(rows[i]),
                               "unsupported": f"cv {cv}: no fold holds this row out ({NOT_HELD_OUT[cv]})"}
    summary = _summary(out_rows)
    meta = {"results": str(results) if results else "shipped results.csv", "cv": cv, "mode": mode,
            "model_factors": model_factors if cv else "as in the calibration file",
            "rows_given": len(rows), "seconds": round(time.monotonic() - started, 1)}
    return {"rows": out_rows, "summary": summary, "folds": folds_out, "meta": meta}


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table: one line per row (measured, predicted with its p05-p95, APE or the unsupported
    reason) + summary."""
    lines = [f"{'version':7} {'system':42.42} {'acc':8.8} {'#':>3} {'benchmark':15.15} {'scenario':11} "
             f"{'measured':>11} {'predicted':>11} {'APE%':>7} {'p05..p95':>23}"]
    for r in result["rows"]:
        head = (f"{r['version']:7} {r['submitter'] + ' / ' + r['system_name']:42.42} {r['accelerator']:8.8} "
                f"{r['total_accelerators']:>3} {r['benchmark']:15.15} {r['scenario']:11}")
        if "ape_pct" in r:
            flag = " *" if r.get("blind_spots") else ""
            band = f"{r['predicted_p05']:.0f}..{r['predicted_p95']:.0f}" if "predicted_p05" in r else ""
            lines.append(f"{head} {r['measured']:>11.1f} {r['predicted']:>11.1f} {r['ape_pct']:>7.1f} "
                         f"{band:>23}{flag}")
        else:
            lines.append(f"{head} unsupported: {r.get('unsupported')}")
    s = result["summary"]
    within = f"; measured within p05..p95 {s['within_interval']:.0%}" if "within_interval" in s else ""
    lines.append("")
    lines.append(f"rows {s['n']}, predicted {s['n_predicted']} (coverage {s['coverage']:.1%}); "
                 f"APE median {s['median_ape_pct']:.1f}%, mean {s['mean_ape_pct']:.1f}%, "
                 f"p90 {s['p90_ape_pct']:.1f}%"
                 + within + "   (* = blind spot: speculative decoding / disaggregated serving)")
    for label in ("by_model", "by_scenario", "by_accelerator"):
        for k, v in s[label].items():
            if v["n_predicted"]:
                lines.append(f"  {label[3:]:12} {k:16} n={v['n_predicted']:>4}  "
                             f"median {v['median_ape_pct']:6.1f}%  p90 {v['p90_ape_pct']:6.1f}%")
    return "\n".join(lines)


def finite(value: Any) -> bool:
    """True for a finite number."""
    return isinstance(value, (int, float)) and math.isfinite(value)
