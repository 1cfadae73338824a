"""Figures for sizing and generation comparisons (PNG or SVG, by the path's suffix).

The only module that imports matplotlib. It never touches pyplot or the global backend: figures are
``matplotlib.figure.Figure`` objects drawn on the Agg canvas, so plotting is safe in tests, threads
and headless servers. Rows are the dicts of ``simulator.sizing`` (``gpus``,
``output_tokens_per_s_per_gpu``, ...); values are SI and converted for display here.
Files are written atomically (``export.atomic_write``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simulator.errors import InputError
from simulator.export import atomic_write

PLOT_SUFFIXES: tuple[str, ...] = (".png", ".svg")
_DPI = 150
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")
_STYLE = {
    "font.size": 10, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
    "svg.hashsalt": "fleetsim",
}


def _format_for(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise InputError(f"cannot plot to '{path.name}': unknown suffix '{path.suffix}'; "
                         f"valid: {', '.join(PLOT_SUFFIXES)}")
    return suffix.lstrip(".")


def _colours(names: Sequence[str]) -> dict[str, str]:
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(dict.fromkeys(names))}


def _save(fig: Any, path: Path, fmt: str) -> Path:
    metadata = {"Date": None} if fmt == "svg" else None
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=_DPI, metadata=metadata))


def _new_figure(width_in: float, height_in: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def _thousands(value: float, _pos: int | None = None) -> str:
    return f"{value:,.0f}"


def _gpus_panel(ax: Any, rows: Sequence[Mapping[str, Any]], colours: Mapping[str, str]) -> None:
    from matplotlib.ticker import FuncFormatter

    names = [str(r["hardware"]) for r in rows]
    heights = [r.get("gpus") if r.get("feasible", True) and r.get("gpus") else 0 for r in rows]
    bars = ax.bar(names, heights, color=[colours[n] for n in names], edgecolor="black", linewidth=0.5)
    labels = []
    for r, h in zip(rows, heights, strict=True):
        if not h:
            labels.append("infeasible")
            continue
        ratio = r.get("gpus_vs_baseline")
        labels.append(f"{h:,.0f}" + (f"\n({ratio:.2f}x)" if ratio is not None else ""))
    ax.bar_label(bars, labels=labels, padding=3, fontsize=9)
    ax.set_ylabel("GPUs needed")
    ax.set_title("GPUs needed at the target load")
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.margins(y=0.18)
    if len(names) > 4:
        ax.tick_params(axis="x", labelrotation=20)


def _frontier_panel(
    ax: Any,
    rows: Sequence[Mapping[str, Any]],
    curves: Mapping[str, Sequence[tuple[float, float]]],
    colours: Mapping[str, str],
) -> None:
    from matplotlib.ticker import FuncFormatter

    for hw, points in curves.items():
        pts = sorted(points)
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.8, color=colours.get(hw), label=hw)
    for r in rows:
        x, y = r.get("output_tokens_per_s_per_user"), r.get("output_tokens_per_s_per_gpu")
        if r.get("feasible", True) and x and y:
            ax.plot([x], [y], marker="*", markersize=13, color=colours.get(str(r["hardware"])),
                    markeredgecolor="black", linestyle="none")
    ax.set_xlabel("Output tokens/s per user (interactivity)")
    ax.set_ylabel("Output tokens/s per GPU")
    ax.set_title("Throughput per GPU vs interactivity")
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    if curves:
        ax.legend(title="hardware", frameon=False)


def plot_comparison(
    rows: Sequence[Mapping[str, Any]],
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """Two panels: GPUs needed per generation (labelled bars, with the ratio to the baseline when rows
    carry ``gpus_vs_baseline``), and output tokens/s per GPU against output tokens/s per user, one line
    per generation (``curves``: hardware -> [(tokens/s per user, tokens/s per GPU), ...]); a star marks
    a row's operating point when it has ``output_tokens_per_s_per_user``. Writes PNG or SVG atomically.
    """
    from matplotlib import rc_context

    path = Path(path)
    fmt = _format_for(path)
    colours = _colours([str(r["hardware"]) for r in rows] + list(curves))
    with rc_context(_STYLE):
        fig = _new_figure(12.0, 5.0)
        ax_gpus, ax_frontier = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.3]})
        if rows:
            _gpus_panel(ax_gpus, rows, colours)
        else:
            ax_gpus.text(0.5, 0.5, "no candidates", ha="center", va="center", transform=ax_gpus.transAxes)
        _frontier_panel(ax_frontier, rows, curves, colours)
        fig.suptitle(title, fontsize=13, fontweight="bold")
        return _save(fig, path, fmt)


def plot_sizing(
    rows: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "GPUs needed per candidate"
) -> Path:
    """Horizontal bars of GPUs needed per feasible candidate (best at the top), coloured by hardware.

    Infeasible rows are skipped (their count is noted under the axis). Writes PNG or SVG atomically.
    """
    from matplotlib import rc_context
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    path = Path(path)
    fmt = _format_for(path)
    feasible = sorted((r for r in rows if r.get("feasible", True) and r.get("gpus")), key=lambda r: r["gpus"])
    num_infeasible = len(rows) - len(feasible)
    colours = _colours([str(r["hardware"]) for r in rows if r in feasible])
    with rc_context(_STYLE):
        fig = _new_figure(9.0, max(2.5, 1.2 + 0.38 * len(feasible)))
        ax = fig.subplots()
        if feasible:
            labels = [" · ".join(str(r.get(k)) for k in ("hardware", "format", "layout") if r.get(k))
                      for r in feasible]
            ys = list(range(len(feasible)))[::-1]
            bars = ax.barh(ys, [r["gpus"] for r in feasible], edgecolor="black", linewidth=0.5,
                           color=[colours[str(r["hardware"])] for r in feasible])
            ax.set_yticks(ys, labels)
            ax.bar_label(bars, labels=[f"{r['gpus']:,.0f}" for r in feasible], padding=3, fontsize=9)
            ax.margins(x=0.12)
            ax.legend(handles=[Patch(color=c, label=hw) for hw, c in colours.items()], title="hardware",
                      frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.text(0.5, 0.5, "no feasible candidate", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
        ax.set_xlabel("GPUs needed")
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title(title)
        if num_infeasible:
            fig.text(0.01, 0.005, f"{num_infeasible} candidate(s) infeasible (see the table)", fontsize=8,
                     color="0.35")
        return _save(fig, path, fmt)
