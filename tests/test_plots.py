"""Plots are written (PNG/SVG by suffix), atomically, and bad suffixes are rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.errors import InputError
from simulator.plots import plot_comparison, plot_sizing

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

COMPARE_ROWS = [
    {"hardware": "h100", "feasible": True, "gpus": 1200, "gpus_vs_baseline": 1.0,
     "output_tokens_per_s_per_gpu": 900.0, "output_tokens_per_s_per_user": 40.0},
    {"hardware": "b200", "feasible": True, "gpus": 420, "gpus_vs_baseline": 0.35,
     "output_tokens_per_s_per_gpu": 2600.0, "output_tokens_per_s_per_user": 55.0},
    {"hardware": "mi300x", "feasible": False, "gpus": None, "reason": "does not fit"},
]
CURVES = {
    "h100": [(10.0, 1500.0), (40.0, 900.0), (80.0, 300.0)],
    "b200": [(15.0, 4000.0), (55.0, 2600.0), (120.0, 800.0)],
}
SIZING_ROWS = [
    {"hardware": "h100", "format": "fp8", "layout": "tp2", "feasible": True, "gpus": 1200},
    {"hardware": "h100", "format": "bf16", "layout": "tp4", "feasible": True, "gpus": 2400},
    {"hardware": "b200", "format": "fp4", "layout": "tp1", "feasible": True, "gpus": 420},
    {"hardware": "b200", "format": "fp8", "layout": "tp16", "feasible": False, "reason": "tp too big"},
]


def test_comparison_png_and_svg(tmp_path: Path) -> None:
    png = plot_comparison(COMPARE_ROWS, CURVES, tmp_path / "cmp.png", title="Llama 3.1 70B, chat")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    svg = plot_comparison(COMPARE_ROWS, CURVES, tmp_path / "cmp.svg", title="Llama 3.1 70B, chat")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "GPUs needed" in text and "tokens/s per GPU" in text  # labels kept as text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.png", "cmp.svg"]  # no temp files left


def test_sizing_plot(tmp_path: Path) -> None:
    path = plot_sizing(SIZING_ROWS, tmp_path / "sizing.PNG")
    assert path.read_bytes()[:8] == PNG_MAGIC
    svg = plot_sizing(SIZING_ROWS, tmp_path / "sizing.svg").read_text()
    assert "h100 · fp8 · tp2" in svg and "1 candidate(s) infeasible" in svg


def test_empty_inputs_still_draw(tmp_path: Path) -> None:
    assert plot_sizing([SIZING_ROWS[-1]], tmp_path / "none.svg").stat().st_size > 0
    assert plot_comparison([], {}, tmp_path / "none.png", title="empty").stat().st_size > 0


def test_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\.png, \.svg"):
        plot_sizing(SIZING_ROWS, tmp_path / "s.pdf")
    with pytest.raises(InputError, match="unknown suffix"):
        plot_comparison(COMPARE_ROWS, CURVES, tmp_path / "c.jpg", title="x")
    assert list(tmp_path.iterdir()) == []
