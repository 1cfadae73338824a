"""Table export (CSV, Parquet, JSON, Markdown), atomic writes, and the text/Markdown report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from simulator import export
from simulator.errors import InputError
from simulator.export import read_table, read_units, write_json, write_table
from simulator.report import SIZING_COLUMNS, Column, fmt_ms, render_markdown, render_sizing, render_text

UNITS = {"gpus": "count", "ttft_p99_s": "s", "power_kw": "kW", "utilisation_frac": "fraction"}


def _rows() -> list[dict]:
    return [
        {"hardware": "h100", "format": "fp8", "feasible": True, "gpus": 16, "ttft_p99_s": 0.25,
         "power_kw": 20.4, "utilisation_frac": 0.81, "reason": None},
        {"hardware": "b200", "format": "fp4", "feasible": False, "gpus": None, "ttft_p99_s": None,
         "power_kw": None, "utilisation_frac": None, "reason": "tp=16 does not fit, domain 8"},
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    path = write_table(_rows(), tmp_path / f"sizing{suffix}", units=UNITS, meta={"seed": 7})
    back = read_table(path)
    assert back == _rows()


def test_numpy_values_and_nested_cells(tmp_path: Path) -> None:
    rows = [{"gpus": np.int64(8), "ttft_p99_s": np.float64(0.5), "extra": {"kv_frac": 0.5}}]
    for suffix in (".csv", ".parquet", ".json"):
        back = read_table(write_table(rows, tmp_path / f"t{suffix}", units=UNITS))
        assert back[0]["gpus"] == 8 and back[0]["ttft_p99_s"] == 0.5
        extra = back[0]["extra"]
        assert (json.loads(extra) if isinstance(extra, str) else extra) == {"kv_frac": 0.5}


def test_parquet_field_units_and_schema_meta(tmp_path: Path) -> None:
    path = write_table(_rows(), tmp_path / "s.parquet", units=UNITS, meta={"seed": 7, "version": "0.1.0"})
    schema = pq.read_schema(path)
    assert schema.field("ttft_p99_s").metadata == {b"unit": b"s"}
    assert schema.field("power_kw").metadata == {b"unit": b"kW"}
    assert not schema.field("hardware").metadata  # text columns carry no unit
    assert read_units(path) == {c: u for c, u in UNITS.items()}
    assert json.loads(schema.metadata[b"seed"]) == 7 and schema.metadata[b"version"] == b"0.1.0"


def test_json_layout_and_non_finite(tmp_path: Path) -> None:
    rows = [{"ttft_p99_s": math.inf, "gpus": 3}]
    data = json.loads(write_table(rows, tmp_path / "t.json", units=UNITS, meta={"a": 1}).read_text())
    assert data == {"meta": {"a": 1}, "units": {"ttft_p99_s": "s", "gpus": "count"},
                    "rows": [{"ttft_p99_s": None, "gpus": 3}]}
    p = write_json({"x": np.float32(1.5), "p": Path("a/b"), "t": (1, 2)}, tmp_path / "o.json")
    assert json.loads(p.read_text()) == {"x": 1.5, "p": "a/b", "t": [1, 2]}


def test_markdown_has_units_in_headers(tmp_path: Path) -> None:
    text = write_table(_rows(), tmp_path / "t.md", units=UNITS).read_text()
    lines = text.strip().splitlines()
    assert lines[0].startswith("| hardware |")
    assert "ttft_p99_s [s]" in lines[0] and "power_kw [kW]" in lines[0]
    assert len(lines) == 2 + len(_rows())
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\.csv, \.parquet, \.json, \.md"):
        write_table(_rows(), tmp_path / "t.xlsx", units=UNITS)
    with pytest.raises(InputError, match="valid"):
        read_table(tmp_path / "t.md")
    with pytest.raises(InputError, match="not found"):
        read_table(tmp_path / "missing.csv")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(export.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_table(_rows(), tmp_path / "t.parquet", units=UNITS)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = write_table(_rows(), tmp_path / "t.csv", units=UNITS)
    before = path.read_text()

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        export.atomic_write(path, half_then_fail)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_missing_directory_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write_table(_rows(), tmp_path / "nope" / "t.csv", units=UNITS)


def test_report_text_and_markdown() -> None:
    rows = [{"rank": 1, "hardware": "h100", "format": "fp8", "layout": "tp2", "feasible": True,
             "replicas": 1234, "gpus": 2468, "output_tokens_per_s": 1_234_567.8, "ttft_p99_s": 0.2345,
             "tpot_p99_s": 0.0301, "utilisation_frac": 0.873, "power_kw": 3210.55},
            {"rank": None, "hardware": "mi300x", "format": "bf16", "layout": "tp1", "feasible": False,
             "reason": "one replica misses the SLO even at 0.01 req/s"}]
    text = render_sizing(rows)
    header = text.splitlines()[0]
    assert "p99 TTFT (ms)" in header and "IT power (kW)" in header
    assert "$/hour" not in header  # no costs given -> cost columns dropped
    assert "2,468" in text and "1,234,568" in text and "234.5" in text and "87.3" in text
    assert "3,210.6" in text
    assert "mi300x bf16 tp1: one replica misses the SLO" in text
    widths = {len(line) for line in text.splitlines()[:3]}
    assert len(widths) <= 2  # header, rule and row aligned (rstrip may shorten the last column)
    md = render_sizing(rows, markdown=True)
    assert md.splitlines()[1].startswith("|---:|:---|")
    assert "**Not feasible:**" in md


def test_report_generic_columns() -> None:
    cols = [Column("t_s", "time (ms)", fmt_ms), Column("name", "name", numeric=False)]
    rows = [{"t_s": 0.001, "name": "a|b"}, {"t_s": None, "name": "c"}]
    text = render_text(rows, cols)
    assert text.splitlines()[2].startswith("      1.0  a|b")
    assert "-" in text.splitlines()[3]
    assert "a\\|b" in render_markdown(rows, cols)
    assert len(SIZING_COLUMNS) == len({c.key for c in SIZING_COLUMNS})
