"""calibrate / validate commands: JSON contract and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "hardware_profiles" / "mlperf" / "results.csv"


def fleetsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, timeout=300
    )


def _subset(tmp_path: Path, n: int = 12) -> Path:
    with SHIPPED.open() as f:
        rows = list(csv.DictReader(f))
    keep: list[dict] = []
    for acc in ("H100", "MI325X", "RTX PRO 6000 Blackwell"):
        keep += [r for r in rows if r["accelerator"] == acc][: n // 3]
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    return path


def test_validate_json_contract(tmp_path):
    out = fleetsim(
        "validate", "--results", str(_subset(tmp_path)), "--mode", "fast", "--format", "json", "-q"
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) >= {"rows", "summary"}
    for row in result["rows"]:
        for key in (
            "version",
            "submitter",
            "system_name",
            "accelerator",
            "total_accelerators",
            "benchmark",
            "scenario",
        ):
            assert key in row
        assert ("unsupported" in row) or {"measured", "predicted", "ape_pct"} <= set(row)
        if "predicted" in row:   # the sizing interval around every prediction
            assert row["predicted_p05"] < row["predicted"] < row["predicted_p95"]
    assert any("unsupported" in r for r in result["rows"])  # the RTX rows are listed, not dropped
    for key in ("median_ape_pct", "mean_ape_pct", "p90_ape_pct", "coverage", "within_interval"):
        assert key in result["summary"]


def test_calibrate_to_a_path_writes_physical_factors(tmp_path):
    target = tmp_path / "cal.yaml"
    out = fleetsim(
        "calibrate", "--results", str(_subset(tmp_path, 40)), "--out", str(target), "--format", "json", "-q"
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert target.exists()
    for group in result["groups"].values():
        for name in ("compute_frac", "memory_frac", "network_frac"):
            assert 0 < group["params"][name] <= 1


def test_validate_bad_input():
    out = fleetsim("validate", "--cv", "decade")
    assert out.returncode == 2 and "valid choices" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = fleetsim("validate", "--results", "/nonexistent.csv")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_summary_counts_measured_values_inside_the_interval():
    from simulator.validation import _summary

    def row(model: str, measured: float) -> dict:
        return {"accelerator": "B200", "scenario": "Server", "model": model, "ape_pct": abs(measured - 100.0),
                "measured": measured, "predicted": 100.0, "predicted_p05": 90.0, "predicted_p95": 120.0}

    rows = [row("llama2-70b", m) for m in (90.0, 105.0, 120.0, 121.0)] + [row("deepseek-r1", 80.0)]
    rows.append({"accelerator": "B200", "scenario": "Server", "model": "llama2-70b", "unsupported": "x"})
    summary = _summary(rows)
    assert summary["by_model"]["llama2-70b"]["within_interval"] == 0.75   # the ends count as inside
    assert summary["by_model"]["deepseek-r1"]["within_interval"] == 0.0
    assert summary["within_interval"] == 0.6   # 3 of the 5 predicted rows; the unsupported one not counted


def test_summary_excludes_blind_spot_rows_per_model():
    """The blind-spot-free statistics of a model are computed from its rows without a blind spot only,
    and are given only for models that have blind-spot rows."""
    from simulator.validation import _summary

    def row(model: str, ape: float, blind: bool) -> dict:
        return {"accelerator": "B200", "scenario": "Server", "model": model, "ape_pct": ape,
                "blind_spots": ["speculative decoding allowed (not modelled)"] if blind else []}

    rows = [row("deepseek-r1", 5.0, False), row("deepseek-r1", 7.0, False), row("deepseek-r1", 90.0, True),
            row("llama2-70b", 3.0, False)]
    summary = _summary(rows)
    assert set(summary["excluding_blind_spots_by_model"]) == {"deepseek-r1"}
    clean = summary["excluding_blind_spots_by_model"]["deepseek-r1"]
    assert clean["n"] == 2 and clean["median_ape_pct"] == 6.0
    assert summary["by_model"]["deepseek-r1"]["median_ape_pct"] == 7.0
    assert summary["excluding_blind_spots"]["n"] == 3 and summary["blind_spot_rows"] == 1


def test_validate_cv_scale_predicts_only_the_larger_systems(tmp_path):
    with SHIPPED.open() as f:
        rows = [r for r in csv.DictReader(f) if r["accelerator"] == "H100" and "llama2-70b" in r["benchmark"]]
    big = [r for r in rows if int(r["total_accelerators"]) > 8]
    keep = [r for r in rows if int(r["total_accelerators"]) <= 8][:30] + big
    assert big and len(keep) > len(big)
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    out = fleetsim("validate", "--results", str(path), "--cv", "scale", "--mode", "fast", "--format", "json",
                   "-q")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    held = [r for r in result["rows"] if "fold" in r]
    assert held and all(r["total_accelerators"] > 8 for r in held)
    assert all("no fold holds this row out (a training row" in r["unsupported"]
               for r in result["rows"] if r["total_accelerators"] <= 8)
    small = [r for r in result["rows"] if r["total_accelerators"] <= 8]   # after -99 / -99.9 deduplication
    assert result["folds"][0]["n_test"] == len(held) and result["folds"][0]["n_train"] == len(small)
