"""Human-readable tables: fixed-width text for the terminal and Markdown, from row dicts.

Rows hold SI values under unit-suffixed keys (``ttft_p99_s``, ``utilisation_frac``, ``power_kw``);
a list of :class:`Column` specs (key, header with its display unit, formatter) chooses what is shown
and converts to display units here (ms for latencies, % for fractions, thousands separators).
Missing values (None, NaN) show as ``-``. No dependencies beyond the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simulator.units import frac_to_pct, s_to_ms

MISSING = "-"

Formatter = Callable[[Any], str]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_text(value: Any) -> str:
    """Plain text."""
    return MISSING if _is_missing(value) else str(value)


def fmt_count(value: Any) -> str:
    """An integer count with thousands separators: 12,345."""
    return MISSING if _is_missing(value) else f"{round(value):,}"


def fmt_number(digits: int = 0) -> Formatter:
    """A number with thousands separators and ``digits`` decimals: 1,234.5."""

    def fmt(value: Any) -> str:
        if _is_missing(value):
            return MISSING
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        return f"{value:,.{digits}f}"

    return fmt


def fmt_ms(value_s: Any) -> str:
    """A duration given in seconds, shown in milliseconds: 0.1234 -> '123.4'."""
    if _is_missing(value_s):
        return MISSING
    if math.isinf(value_s):
        return "inf"
    return f"{s_to_ms(value_s):,.1f}"


def fmt_pct(value_frac: Any) -> str:
    """A fraction shown as a percentage: 0.873 -> '87.3'."""
    return MISSING if _is_missing(value_frac) else f"{frac_to_pct(value_frac):.1f}"


def fmt_usd(value: Any) -> str:
    """Dollars: 2 decimals below 100, whole dollars with separators above."""
    if _is_missing(value):
        return MISSING
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def fmt_ratio(value: Any) -> str:
    """A ratio: 0.4213 -> '0.42x'."""
    return MISSING if _is_missing(value) else f"{value:.2f}x"


@dataclass(frozen=True)
class Column:
    """One displayed column: the row key, the header (with its display unit) and the formatter."""

    key: str
    header: str
    fmt: Formatter = fmt_text
    numeric: bool = True


def text_col(key: str, header: str) -> Column:
    """A left-aligned text column."""
    return Column(key, header, fmt_text, numeric=False)


SIZING_COLUMNS: tuple[Column, ...] = (
    Column("rank", "#", fmt_count),
    text_col("hardware", "hardware"),
    text_col("format", "format"),
    text_col("layout", "layout"),
    Column("replicas", "replicas", fmt_count),
    Column("gpus", "GPUs", fmt_count),
    Column("nodes", "nodes", fmt_count),
    Column("racks", "racks", fmt_count),
    Column("output_tokens_per_s", "out tok/s", fmt_number(0)),
    Column("output_tokens_per_s_per_gpu", "tok/s/GPU", fmt_number(0)),
    Column("ttft_p99_s", "p99 TTFT (ms)", fmt_ms),
    Column("tpot_p99_s", "p99 TPOT (ms)", fmt_ms),
    Column("utilisation_frac", "util (%)", fmt_pct),
    Column("power_kw", "IT power (kW)", fmt_number(1)),
    Column("facility_power_kw", "facility (kW)", fmt_number(1)),
    Column("usd_per_hour", "$/hour", fmt_usd),
    Column("usd_per_million_output_tokens", "$/M out tok", fmt_usd),
)

COMPARE_COLUMNS: tuple[Column, ...] = (
    text_col("hardware", "hardware"),
    text_col("format", "format"),
    text_col("layout", "layout"),
    Column("replicas", "replicas", fmt_count),
    Column("gpus", "GPUs", fmt_count),
    Column("gpus_vs_baseline", "GPUs vs base", fmt_ratio),
    Column("output_tokens_per_s_per_gpu", "tok/s/GPU", fmt_number(0)),
    Column("output_tokens_per_s_per_gpu_vs_baseline", "tok/s/GPU vs base", fmt_ratio),
    Column("power_kw", "IT power (kW)", fmt_number(1)),
    Column("power_kw_vs_baseline", "power vs base", fmt_ratio),
    Column("usd_per_hour", "$/hour", fmt_usd),
    Column("usd_per_million_output_tokens", "$/M out tok", fmt_usd),
    Column("usd_per_million_output_tokens_vs_baseline", "$/M tok vs base", fmt_ratio),
)


def _visible(rows: Sequence[Mapping[str, Any]], columns: Iterable[Column], drop_empty: bool) -> list[Column]:
    cols = list(columns)
    if not drop_empty:
        return cols
    return [c for c in cols if any(not _is_missing(r.get(c.key)) for r in rows)]


def _cells(rows: Sequence[Mapping[str, Any]], cols: Sequence[Column]) -> list[list[str]]:
    return [[c.fmt(r.get(c.key)) for c in cols] for r in rows]


def render_text(
    rows: Sequence[Mapping[str, Any]], columns: Iterable[Column], *, drop_empty: bool = True
) -> str:
    """Fixed-width table: numbers right-aligned, text left-aligned, a rule under the header.

    Columns whose values are all missing are dropped when ``drop_empty`` (e.g. costs not given).
    """
    cols = _visible(rows, columns, drop_empty)
    if not cols:
        return ""
    cells = _cells(rows, cols)
    widths = [max([len(c.header)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        cells = zip(values, widths, cols, strict=True)
        parts = [v.rjust(w) if c.numeric else v.ljust(w) for v, w, c in cells]
        return "  ".join(parts).rstrip()

    out = [line([c.header for c in cols]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], cells: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped; numeric columns right-aligned)."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(esc(h) for h in headers) + " |",
           "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    out += ["| " + " | ".join(esc(v) for v in row) + " |" for row in cells]
    return "\n".join(out)


def render_markdown(
    rows: Sequence[Mapping[str, Any]], columns: Iterable[Column], *, drop_empty: bool = True
) -> str:
    """The same table as :func:`render_text`, as Markdown."""
    cols = _visible(rows, columns, drop_empty)
    if not cols:
        return ""
    return markdown_table([c.header for c in cols], _cells(rows, cols), [c.numeric for c in cols])


def _infeasible_lines(rows: Sequence[Mapping[str, Any]], markdown: bool) -> list[str]:
    lines = []
    for r in rows:
        name = " ".join(str(r.get(k)) for k in ("hardware", "format", "layout") if r.get(k) is not None)
        lines.append(f"- {name}: {r.get('reason') or 'infeasible'}" if markdown
                     else f"  {name}: {r.get('reason') or 'infeasible'}")
    return lines


def render_rows(
    rows: Sequence[Mapping[str, Any]], columns: Iterable[Column], *, markdown: bool = False
) -> str:
    """Feasible rows as a table, then the infeasible ones as a list of 'name: reason' lines."""
    feasible = [r for r in rows if r.get("feasible", True)]
    infeasible = [r for r in rows if not r.get("feasible", True)]
    render = render_markdown if markdown else render_text
    parts = [render(feasible, columns)] if feasible else ["No feasible candidate."]
    if infeasible:
        parts.append("\n" + ("**Not feasible:**" if markdown else "Not feasible:"))
        parts.extend(_infeasible_lines(infeasible, markdown))
    return "\n".join(parts)


def render_sizing(rows: Sequence[Mapping[str, Any]], *, markdown: bool = False) -> str:
    """The sizing table (ranked rows from ``sizing.rank``)."""
    return render_rows(rows, SIZING_COLUMNS, markdown=markdown)


def render_compare(rows: Sequence[Mapping[str, Any]], *, markdown: bool = False) -> str:
    """The generation comparison (rows from ``sizing.compare_rows``)."""
    return render_rows(rows, COMPARE_COLUMNS, markdown=markdown)
