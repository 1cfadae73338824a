"""The fleetsim command line (typer). Thin: parse, call the library once, print.

Errors: ``InputError`` and usage errors print one line on stderr and exit 2; ``NoFeasibleAnswer``
exits 1; an answer exits 0. ``--format json`` prints only JSON on stdout.
"""

from __future__ import annotations

import json
import math
import sys
from enum import Enum
from typing import Annotated, Any

import typer

from simulator import units
from simulator.deployment import Layout, make_deployment
from simulator.efficiency import model_throughput_factor
from simulator.errors import InputError, NoFeasibleAnswer
from simulator.estimate import estimate as run_estimate
from simulator.estimate import factor_notes
from simulator.export import check_output_path, write_columns
from simulator.hardware import list_accelerators, load_accelerator
from simulator.metrics import Slo
from simulator.mlperf import slo_limits_s
from simulator.models import list_models
from simulator.simulation import records_columns
from simulator.simulation import run as run_simulation
from simulator.workload import (
    OfflineArrivals,
    PoissonArrivals,
    Workload,
    benchmark_workload,
    canonical_benchmark,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="fleetsim: size LLM-inference GPU fleets with a calibrated discrete-event simulation.",
)
hardware_app = typer.Typer(no_args_is_help=True, help="Accelerator profiles.")
models_app = typer.Typer(no_args_is_help=True, help="Model catalog.")
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")


class OutputFormat(str, Enum):
    """How results are printed."""

    table = "table"
    json = "json"


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (non-finite floats as null)."""
    typer.echo(json.dumps(_clean(obj), indent=2, default=_json_default))


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def print_pairs(rows: list[tuple[str, str]]) -> None:
    """Print aligned 'label  value' lines."""
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        typer.echo(f"{label:<{width}}  {value}")


# --------------------------------------------------------------------------------------------- hardware
@hardware_app.command("list")
def hardware_list(fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table) -> None:
    """List accelerator profiles."""
    rows = [
        {
            "id": a.id,
            "name": a.name,
            "vendor": a.vendor,
            "status": a.status,
            "hbm_capacity_gib": units.bytes_to_gib(a.hbm_capacity_bytes),
            "hbm_bandwidth_tb_per_s": a.hbm_bandwidth_bytes_per_s / units.TB,
            "formats": ",".join(a.supported_compute_formats),
            "scaleup_domain_gpus": a.scaleup_domain_gpus,
        }
        for a in list_accelerators()
    ]
    if fmt is OutputFormat.json:
        print_json(rows)
        return
    typer.echo(
        f"{'id':<18}{'vendor':<8}{'status':<11}{'HBM GiB':>8}{'TB/s':>7}  {'formats':<18}{'domain':>6}"
    )
    for r in rows:
        typer.echo(
            f"{r['id']:<18}{r['vendor']:<8}{r['status']:<11}{r['hbm_capacity_gib']:>8.0f}"
            f"{r['hbm_bandwidth_tb_per_s']:>7.1f}  {r['formats']:<18}{r['scaleup_domain_gpus']:>6}"
        )


@hardware_app.command("show")
def hardware_show(
    name: Annotated[str, typer.Argument(help="accelerator id, e.g. mi355x")],
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Show one accelerator profile with the source of every figure."""
    a = load_accelerator(name)
    figures = {key: a.figure(key) for key in a.sources}
    if fmt is OutputFormat.json:
        print_json(
            {
                "id": a.id,
                "name": a.name,
                "vendor": a.vendor,
                "architecture": a.architecture,
                "status": a.status,
                "figures": figures,
                "sources": dict(a.sources),
                "unknown_figures": list(a.unknown_figures),
                "ranges": {k: a.figure_range(k) for k in a.sources if k in a.ranges},
            }
        )
        return
    status = " (ANNOUNCED: projected figures)" if a.status == "announced" else ""
    typer.echo(f"{a.name} [{a.id}] {a.vendor}/{a.architecture}{status}")
    for key, value in figures.items():
        shown = "unknown" if value is None else f"{value:.6g}"
        rng = f"  range {a.figure_range(key)}" if key in a.ranges else ""
        typer.echo(f"  {key:<40}{shown:>14}{rng}  [{a.sources[key]}]")


@models_app.command("list")
def models_list(fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table) -> None:
    """List the model catalog with derived parameter counts and KV bytes per token at fp8."""
    rows = [
        {
            "id": m.id,
            "family": m.family,
            "attention": m.attention,
            "layers": m.num_layers,
            "total_params": m.total_params,
            "active_params": m.active_params,
            "kv_elements_per_token": m.kv_elements_per_token_full + m.kv_elements_per_token_sliding,
        }
        for m in list_models()
    ]
    if fmt is OutputFormat.json:
        print_json(rows)
        return
    typer.echo(
        f"{'id':<22}{'family':<8}{'attn':<6}{'layers':>7}{'total B':>10}{'active B':>10}{'KV B/tok fp8':>14}"
    )
    for r in rows:
        typer.echo(
            f"{r['id']:<22}{r['family']:<8}{r['attention']:<6}{r['layers']:>7}"
            f"{units.billions(r['total_params']):>10.1f}{units.billions(r['active_params']):>10.1f}"
            f"{r['kv_elements_per_token']:>14,.0f}"
        )


# --------------------------------------------------------------------------------------------- estimate
ModelOpt = Annotated[str, typer.Option("--model", help="model id, e.g. llama2-70b")]
HardwareOpt = Annotated[str, typer.Option("--hardware", help="accelerator id, e.g. mi355x")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="named precision: fp4, fp8, bf16, ...")]
SpeculativeOpt = Annotated[
    bool, typer.Option("--speculative/--no-speculative", help="speculative decoding with the model's draft")
]


@app.command()
def estimate(
    model: ModelOpt,
    hardware: HardwareOpt,
    precision: PrecisionOpt,
    tp: Annotated[int, typer.Option("--tp")] = 1,
    batch: Annotated[int, typer.Option("--batch")] = 1,
    input_tokens: Annotated[int, typer.Option("--input-tokens")] = 1024,
    output_tokens: Annotated[int, typer.Option("--output-tokens")] = 256,
    pp: Annotated[int, typer.Option("--pp")] = 1,
    ep: Annotated[int, typer.Option("--ep")] = 1,
    attention: Annotated[str, typer.Option("--attention", help="tp or dp")] = "tp",
    speculative: SpeculativeOpt = False,
    framework: Annotated[str | None, typer.Option("--framework", help="trtllm, vllm or sglang")] = None,
    kv_precision: Annotated[str | None, typer.Option("--kv-precision")] = None,
    weights_precision: Annotated[str | None, typer.Option("--weights-precision")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Memory plan and step times of one deployment (no simulation)."""
    dep = make_deployment(
        model,
        hardware,
        precision,
        Layout(tp=tp, pp=pp, ep=ep, attention=attention, speculative=speculative),
        framework=framework,
        kv_precision=kv_precision,
        weights=weights_precision,
    )
    result = run_estimate(dep, batch=batch, input_tokens=input_tokens, output_tokens=output_tokens)
    if fmt is OutputFormat.json:
        print_json(result)
        return
    _print_estimate(result)


def _print_estimate(r: dict[str, Any]) -> None:
    ms = units.s_to_ms
    status = "  (ANNOUNCED hardware: projected figures)" if r["hardware_status"] == "announced" else ""
    typer.echo(
        f"{r['model']} on {r['gpus_per_replica']}x {r['hardware']} {r['precision']} "
        f"(w={r['weights_format']} a={r['activations_format']} kv={r['kv_cache_format']}, "
        f"GEMMs at {r['gemm_compute_format']}), TP{r['tp']} PP{r['pp']} EP{r['ep']}"
        f"{' spec' if r.get('speculative') else ''}, {r['framework']}{status}"
    )
    print_pairs(
        [
            ("fits", "yes" if r["fits"] else "no"),
            ("weights per GPU", units.fmt_bytes(r["weights_bytes_per_gpu"])),
            ("reserve per GPU", units.fmt_bytes(r["reserve_bytes_per_gpu"])),
            ("KV cache per token per GPU", f"{r['kv_bytes_per_token_per_gpu']:,.0f} bytes"),
            ("KV capacity", f"{r['kv_capacity_tokens']:,} tokens ({r['kv_capacity_blocks']:,} blocks)"),
            (f"largest batch ({r['input_tokens']}+{r['output_tokens']} tokens)", f"{r['largest_batch']:,}"),
            (f"prefill of one {r['input_tokens']}-token input", f"{ms(r['prefill_s']):.2f} ms"),
            (
                f"decode step, batch {r['batch']} at context {r['decode_context_tokens']:.0f}",
                f"{ms(r['decode_step_s']):.2f} ms"
                + (f" ({r['tokens_per_step']:.1f} tokens per sequence)" if r["tokens_per_step"] > 1 else "")
                + ("" if r["batch_fits"] else "  (batch exceeds KV capacity)"),
            ),
            ("single-request TTFT", f"{ms(r['single_request_ttft_s']):.2f} ms"),
            ("single-request TPOT", f"{ms(r['single_request_tpot_s']):.2f} ms"),
            (
                f"decode throughput at batch {r['batch']}",
                f"{r['decode_output_tokens_per_s_per_gpu_at_batch']:,.0f} output tokens/s per GPU",
            ),
            (
                "saturated decode throughput",
                f"{r['saturated_decode_output_tokens_per_s_per_gpu']:,.0f} output tokens/s per GPU "
                f"(batch {r['largest_batch']})",
            ),
            ("efficiency factors", r["efficiency_source"]),
        ]
    )
    for note in r["notes"]:
        typer.echo(f"note: {note}")


# --------------------------------------------------------------------------------------------- simulate
SLO_PRESETS = {"mlperf-server": "server", "mlperf-interactive": "interactive"}


def _slo_for(benchmark: str, preset: str | None, ttft_ms: float | None, tpot_ms: float | None) -> Slo | None:
    if preset:
        if preset not in SLO_PRESETS:
            raise InputError(f"unknown SLO preset '{preset}'; valid choices: {', '.join(SLO_PRESETS)}")
        ttft_s, tpot_s = slo_limits_s(canonical_benchmark(benchmark), SLO_PRESETS[preset])
        return Slo(ttft_p99_s=ttft_s, tpot_p99_s=tpot_s)
    if ttft_ms is None and tpot_ms is None:
        return None
    if ttft_ms is None or tpot_ms is None or ttft_ms <= 0 or tpot_ms <= 0:
        raise InputError("give both --ttft-p99-ms and --tpot-p99-ms, each > 0")
    return Slo(ttft_p99_s=units.ms_to_s(ttft_ms), tpot_p99_s=units.ms_to_s(tpot_ms))


def _workload(benchmark: str, rate: float | None, target_tps: float | None, offline: int | None) -> Workload:
    given = [x is not None for x in (rate, target_tps, offline)]
    if sum(given) != 1:
        raise InputError("give exactly one of --rate, --target-tps or --offline")
    lengths = benchmark_workload(benchmark)
    if offline is not None:
        if offline < 1:
            raise InputError(f"--offline must be a positive number of requests, got {offline}")
        return Workload(arrivals=OfflineArrivals(num_requests=offline), benchmark=benchmark)
    if target_tps is not None:
        if target_tps <= 0:
            raise InputError(f"--target-tps must be > 0, got {target_tps}")
        rate = target_tps / lengths.mean_output_tokens
    if rate is None or rate <= 0:
        raise InputError(f"--rate must be > 0 requests/s, got {rate}")
    return Workload(arrivals=PoissonArrivals(rate_per_s=rate), benchmark=benchmark)


@app.command()
def simulate(
    model: ModelOpt,
    hardware: HardwareOpt,
    precision: PrecisionOpt,
    tp: Annotated[int, typer.Option("--tp")] = 1,
    replicas: Annotated[int, typer.Option("--replicas")] = 1,
    rate: Annotated[float | None, typer.Option("--rate", help="Poisson arrivals, requests/s")] = None,
    target_tps: Annotated[float | None, typer.Option("--target-tps", help="offered output tokens/s")] = None,
    offline: Annotated[
        int | None, typer.Option("--offline", help="N requests all at t=0 (MLPerf Offline)")
    ] = None,
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", help="token-length preset; default: the model's")
    ] = None,
    duration: Annotated[float, typer.Option("--duration", help="seconds of arrivals")] = 120.0,
    router: Annotated[str, typer.Option("--router")] = "least-outstanding",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    pp: Annotated[int, typer.Option("--pp")] = 1,
    ep: Annotated[int, typer.Option("--ep")] = 1,
    speculative: SpeculativeOpt = False,
    framework: Annotated[str | None, typer.Option("--framework")] = None,
    kv_precision: Annotated[str | None, typer.Option("--kv-precision")] = None,
    slo: Annotated[str | None, typer.Option("--slo", help="mlperf-server or mlperf-interactive")] = None,
    ttft_p99_ms: Annotated[float | None, typer.Option("--ttft-p99-ms")] = None,
    tpot_p99_ms: Annotated[float | None, typer.Option("--tpot-p99-ms")] = None,
    requests_out: Annotated[
        str | None, typer.Option("--requests-out", help="per-request records .parquet/.csv")
    ] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Simulate a fleet of identical replicas serving a workload; report latency tails and throughput."""
    dep = make_deployment(
        model,
        hardware,
        precision,
        Layout(tp=tp, pp=pp, ep=ep, speculative=speculative),
        framework=framework,
        kv_precision=kv_precision,
    )
    bench = benchmark or dep.model.mlperf_benchmark
    wl = _workload(bench, rate, target_tps, offline)
    slo_obj = _slo_for(bench, slo, ttft_p99_ms, tpot_p99_ms)
    if requests_out:
        check_output_path(requests_out, (".parquet", ".csv"))
    outcome = run_simulation(
        dep, wl, num_replicas=replicas, duration_s=duration, router=router, seed=seed, slo=slo_obj
    )
    summary = outcome.summary.to_dict()
    result = {
        "model": dep.model.id,
        "hardware": dep.accelerator.id,
        "precision": dep.precision_name,
        "tp": tp,
        "pp": pp,
        "ep": ep,
        "framework": dep.framework,
        "replicas": replicas,
        "gpus": replicas * dep.layout.gpus,
        "router": router,
        "seed": seed,
        "benchmark": bench,
        "duration_s": None if offline else duration,
        "offered_rate_per_s": None if offline else wl.arrivals.mean_rate_per_s,
        "offline_requests": offline,
        "num_requests": outcome.num_requests,
        "slo_ttft_p99_s": slo_obj.ttft_p99_s if slo_obj else None,
        "slo_tpot_p99_s": slo_obj.tpot_p99_s if slo_obj else None,
        **summary,
        "output_tokens_per_s_per_gpu": summary["output_tokens_per_s"] / (replicas * dep.layout.gpus),
        "model_throughput_factor": model_throughput_factor(dep.model.id),
    }
    if slo_obj is not None:
        result["slo_attainment"] = summary.get("slo_attainment_frac")
    if requests_out:
        columns, col_units = records_columns(outcome.run)
        write_columns(
            columns, requests_out, units=col_units, meta={"inputs": {k: result[k] for k in list(result)[:17]}}
        )
    if fmt is OutputFormat.json:
        print_json(result)
        return
    _print_simulation(result)


def _print_simulation(r: dict[str, Any]) -> None:
    ms = units.s_to_ms
    load = (
        f"offline {r['offline_requests']} requests"
        if r["offline_requests"]
        else (f"{r['offered_rate_per_s']:.2f} req/s for {r['duration_s']:.0f} s")
    )
    typer.echo(
        f"{r['model']} on {r['replicas']} x TP{r['tp']} {r['hardware']} {r['precision']} ({r['gpus']} GPUs), "
        f"{load}, router {r['router']}, seed {r['seed']}"
    )
    if r["saturated"]:
        typer.echo(f"SATURATED: {r['saturation_reason']} (the load exceeds what this fleet can carry)")
    rows = [
        ("completed requests", f"{r['completed_requests']:,} of {r['arrived_requests']:,}"),
        (
            "output tokens/s (MLPerf)",
            f"{r['output_tokens_per_s']:,.0f}  ({r['output_tokens_per_s_per_gpu']:,.0f} per GPU)",
        ),
        ("output tokens/s (steady window)", f"{r['steady_output_tokens_per_s']:,.0f}"),
    ]
    for name in ("ttft", "tpot", "e2e", "queue_delay"):
        p50, p99 = r.get(f"{name}_p50_s"), r.get(f"{name}_p99_s")
        if p50 is None or not math.isfinite(p50):
            continue
        lo, hi = r.get(f"{name}_p99_ci_low_s"), r.get(f"{name}_p99_ci_high_s")
        ci = (
            f"  (95% CI {ms(lo):.1f}-{ms(hi):.1f})"
            if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi)
            else ""
        )
        rows.append((f"{name.upper().replace('_', ' ')} p50 / p99", f"{ms(p50):.1f} / {ms(p99):.1f} ms{ci}"))
    rows.append(("utilisation", f"{units.frac_to_pct(r['utilisation_frac']):.1f}%"))
    rows.append(("KV occupancy (mean)", f"{units.frac_to_pct(r['kv_occupancy_mean_frac']):.1f}%"))
    rows.append(("preemptions", f"{r['preemptions']:,}"))
    if r.get("slo_attainment") is not None:
        rows.append(
            (
                "SLO attainment",
                f"{units.frac_to_pct(r['slo_attainment']):.2f}% (p99 TTFT <= "
                f"{ms(r['slo_ttft_p99_s']):.0f} ms, p99 TPOT <= {ms(r['slo_tpot_p99_s']):.0f} ms)",
            )
        )
    print_pairs(rows)
    for note in factor_notes(r["model"]):
        typer.echo(f"note: this run is the roofline model; {note}")


# ------------------------------------------------------------------------------ size, compare, sweep, schema
ScenarioArg = Annotated[str, typer.Argument(help="scenario file, or the name of a shipped scenario")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a scenario field, path=value (repeatable), e.g. slo.tpot_p99_ms=40"),
]
TableOutOpt = Annotated[str | None, typer.Option("--out", help="write the table: .csv .parquet .json .md")]
PlotOpt = Annotated[str | None, typer.Option("--plot", help="write a figure: .png or .svg")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress on stderr")]
IntervalHelp = (
    "also size the best candidate at the calibration residual quantiles (and announced-hardware figure "
    "ranges): gpus_p05 and gpus_p95 beside gpus"
)


class _ProgressDisplay:
    """Planner progress on stderr: a rich progress bar on a terminal, else one line per finished step."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.quiet = quiet
        self.console = Console(stderr=True)
        self.live = not quiet and self.console.is_terminal
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _ProgressDisplay:
        if self.live:
            from rich import progress as rp

            self.bar = rp.Progress(
                rp.SpinnerColumn(),
                rp.TextColumn("{task.description}"),
                rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        text = f"{event.stage} {event.label}: {event.message}"
        if self.bar is None:
            if event.finished:
                typer.echo(
                    f"[{event.stage} {event.done}/{event.total}] {event.label}: {event.message}", err=True
                )
            return
        if event.stage not in self.tasks:
            self.tasks[event.stage] = self.bar.add_task(text, total=event.total)
        self.bar.update(
            self.tasks[event.stage], completed=event.done, total=event.total, description=text[:70]
        )


def _check_outputs(out: str | None, plot: str | None) -> None:
    from simulator.plots import PLOT_SUFFIXES

    if out:
        check_output_path(out)
    if plot:
        check_output_path(plot, PLOT_SUFFIXES)


def _display_columns(compare: bool) -> tuple[Any, ...]:
    from simulator.report import Column, fmt_count, fmt_ms, fmt_number, fmt_pct, fmt_ratio, fmt_usd, text_col

    ident = (
        text_col("hardware", "hardware"),
        text_col("precision", "format"),
        text_col("layout", "layout"),
        Column("replicas", "replicas", fmt_count),
        Column("gpus", "GPUs", fmt_count),
    )
    cost = (
        Column("usd_per_hour", "$/hour", fmt_usd),
        Column("usd_per_million_output_tokens", "$/M out tok", fmt_number(3)),
    )
    if compare:
        return (
            *ident,
            Column("gpus_vs_baseline", "GPUs vs base", fmt_ratio),
            Column("output_tokens_per_s_per_gpu", "tok/s/GPU", fmt_number(0)),
            Column("uplift_vs_baseline", "tok/s/GPU vs base", fmt_ratio),
            Column("ttft_p99_s", "p99 TTFT (ms)", fmt_ms),
            Column("tpot_p99_s", "p99 TPOT (ms)", fmt_ms),
            Column("power_kw", "IT power (kW)", fmt_number(1)),
            Column("power_kw_vs_baseline", "power vs base", fmt_ratio),
            *cost,
            Column("usd_per_million_output_tokens_vs_baseline", "$/M tok vs base", fmt_ratio),
            text_col("check", "check"),
        )
    return (
        Column("rank", "#", fmt_count),
        *ident,
        Column("nodes", "nodes", fmt_count),
        Column("racks", "racks", fmt_count),
        Column("output_tokens_per_s", "out tok/s", fmt_number(0)),
        Column("output_tokens_per_s_per_gpu", "tok/s/GPU", fmt_number(0)),
        Column("ttft_p99_s", "p99 TTFT (ms)", fmt_ms),
        Column("tpot_p99_s", "p99 TPOT (ms)", fmt_ms),
        Column("load_frac", "load (%)", fmt_pct),
        Column("kv_occupancy_mean_frac", "KV (%)", fmt_pct),
        Column("power_kw", "IT power (kW)", fmt_number(1)),
        Column("facility_power_kw", "facility (kW)", fmt_number(1)),
        *cost,
        text_col("check", "check"),
    )


def _render(rows: list[dict[str, Any]], compare: bool) -> str:
    from simulator.report import render_rows

    shown = [
        {**r, "check": ("fleet sim" if r.get("verified") else "estimate") if r.get("feasible") else None}
        for r in rows
    ]
    return render_rows(shown, _display_columns(compare))


def _headline(head: dict[str, Any], scenario: Any) -> str:
    ms = units.s_to_ms
    source = f" ({scenario.slo.source})" if scenario.slo.source else ""
    return (
        f"{head['model']} at {head['target_output_tokens_per_s']:,.0f} output tokens/s "
        f"({head['target_rate_per_s']:,.1f} req/s), p99 TTFT <= {ms(head['slo_ttft_p99_s']):,.0f} ms and "
        f"TPOT <= {ms(head['slo_tpot_p99_s']):,.0f} ms{source}; router {head['router']}, "
        f"seed {head['seed']}" + (f", fidelity {head['fidelity']:g}" if head["fidelity"] < 1 else "")
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _variants(interval: bool) -> Any:
    from simulator.uncertainty import IntervalVariants

    return IntervalVariants() if interval else None


def _interval_text(row: dict[str, Any]) -> str:
    """' (p05–p95: 66–91)' for a row with an interval, '' without."""
    if "gpus_p05" not in row or (row["gpus_p05"] is None and row["gpus_p95"] is None):
        return ""
    lo, hi = ("infeasible" if row[k] is None else f"{row[k]:,}" for k in ("gpus_p05", "gpus_p95"))
    return f" (p05–p95: {lo}–{hi})"


def _interval_notes(cases: Any) -> None:
    """Where each interval comes from, and why a case is infeasible."""
    for label in dict.fromkeys(c.label for c in cases):
        mine = [c for c in cases if c.label == label]
        typer.echo(f"interval of {label}: {mine[0].note}")
        for c in mine:
            if not c.feasible:
                typer.echo(f"{c.tag} case infeasible: {c.reason}")


def _notes(rows: list[dict[str, Any]], scenario: Any, verified: str = "competitive candidates") -> None:
    for note in factor_notes(scenario.model, scenario.slo.to_slo().tpot_p99_s):
        typer.echo(f"note: {note}")
    announced = sorted({r["hardware"] for r in rows if r.get("hardware_status") == "announced"})
    if announced:
        typer.echo(f"note: {', '.join(announced)}: ANNOUNCED hardware, projected figures")
    if any(r.get("feasible") and not r.get("verified") for r in rows):
        which = (
            "simulation.verify is 'none'"
            if scenario.simulation.verify == "none"
            else f"only {verified} get whole-fleet simulations"
        )
        typer.echo(
            "note: 'estimate' rows are sized from one replica's highest passing rate (Poisson splitting, no "
            f"fleet run); {which}"
        )
    from simulator.candidate_search import TOO_LARGE

    large = [
        f"{r['hardware']} {r['precision']} {r['layout']}"
        for r in rows if TOO_LARGE in r.get("note", "")
    ]
    if large:
        typer.echo(f"note: {', '.join(large)}: fleet {TOO_LARGE} in reasonable time, the estimate stands")


@app.command()
def size(
    scenario: ScenarioArg,
    set_: SetOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    out: TableOutOpt = None,
    plot: PlotOpt = None,
    quiet: QuietOpt = False,
    interval: Annotated[bool, typer.Option("--interval/--no-interval", help=IntervalHelp)] = True,
) -> None:
    """Size the fleet: GPUs, nodes, racks, power and cost of every candidate, ranked, with an interval."""
    from simulator import planner
    from simulator.export import write_table
    from simulator.plots import plot_sizing
    from simulator.scenario import load_scenario

    sc = load_scenario(scenario, set_ or [])
    _check_outputs(out, plot)
    with _ProgressDisplay(quiet) as progress:
        result = planner.size(sc, progress=progress, efficiency_variants=_variants(interval))
    if out:
        write_table(result.rows, out, units=planner.ROW_UNITS, meta=result.meta())
    if plot:
        title = f"GPUs needed: {sc.name or sc.model}, {sc.target_output_tokens_per_s():,.0f} output tok/s"
        plot_sizing([{**r, "format": r["precision"]} for r in result.rows], plot, title=title)
    if fmt is OutputFormat.json:
        print_json(result.to_json())
    else:
        typer.echo(_headline(result.header(), sc))
        typer.echo(_render(result.rows, compare=False))
        _notes(result.rows, sc)
        best = result.best
        if best is not None:
            typer.echo(
                f"best: {best['hardware']} {best['precision']} {best['layout']}: {best['replicas']:,} "
                f"replicas = {best['gpus']:,} GPUs{_interval_text(best)} in {_count(best['nodes'], 'node')}, "
                f"{_count(best['racks'], 'rack')}"
            )
        _interval_notes(result.cases)
        typer.echo(
            f"sized {len(result.rows)} candidates with {result.num_simulations} simulations in "
            f"{result.wall_s:.1f} s"
        )
    if result.best is None:
        raise NoFeasibleAnswer("no candidate meets the SLOs at the target load (reasons above)")


@app.command()
def compare(
    scenario: ScenarioArg,
    hardware: Annotated[str | None, typer.Option("--hardware", help="comma list: mi300x,h200,b200")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="divide by it (default: first)")] = None,
    formats: Annotated[
        str,
        typer.Option(
            "--formats", help="'auto' (each generation in its MLPerf precision), 'scenario' or a list"
        ),
    ] = "auto",
    set_: SetOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    out: TableOutOpt = None,
    plot: PlotOpt = None,
    quiet: QuietOpt = False,
    interval: Annotated[bool, typer.Option("--interval", help=IntervalHelp)] = False,
    verify_each: Annotated[
        bool,
        typer.Option(
            "--verify-each",
            help="whole-fleet runs for every generation's best (default: the competitive ones and the "
            "baseline; the rest keep their one-replica estimate)",
        ),
    ] = False,
) -> None:
    """The same workload sized on each generation, with ratios to a baseline (exit 1: none feasible)."""
    from simulator import planner
    from simulator.export import write_table
    from simulator.plots import plot_comparison
    from simulator.scenario import load_scenario

    sc = load_scenario(scenario, set_ or [])
    _check_outputs(out, plot)
    chosen = None if formats == "scenario" else formats if formats == "auto" else formats.split(",")
    with _ProgressDisplay(quiet) as progress:
        result = planner.compare(
            sc,
            hardware=hardware.split(",") if hardware else None,
            baseline=baseline,
            formats=chosen,
            curves=bool(plot),
            progress=progress,
            efficiency_variants=_variants(interval),
            verify_each=verify_each,
        )
    if out:
        meta = {**result.sizing.meta(), "baseline": result.baseline}
        write_table(result.rows, out, units=planner.ROW_UNITS, meta=meta)
    if plot:
        plot_comparison(
            [{**r, "format": r.get("precision")} for r in result.rows],
            result.curves,
            plot,
            title=f"{sc.model} at {sc.target_output_tokens_per_s():,.0f} output tok/s, "
            f"baseline {result.baseline}",
        )
    if fmt is OutputFormat.json:
        print_json(result.to_json())
    else:
        head = _headline(result.sizing.header(), result.sizing.scenario)
        typer.echo(f"{head}; baseline {result.baseline}")
        typer.echo(_render(result.rows, compare=True))
        _notes(result.rows, sc, "the competitive generations and the baseline (--verify-each: all)")
        for r in result.rows:
            if _interval_text(r):
                typer.echo(f"{r['hardware']}: {r['gpus']:,} GPUs{_interval_text(r)}")
        sizing = result.sizing
        _interval_notes(sizing.cases)
        typer.echo(
            f"sized {len(sizing.rows)} candidates with {sizing.num_simulations} simulations in "
            f"{sizing.wall_s:.1f} s"
        )
    if not any(r.get("feasible") for r in result.rows):
        raise NoFeasibleAnswer("no hardware meets the SLOs at the target load (reasons above)")


@app.command()
def sweep(
    scenario: ScenarioArg,
    grid: Annotated[list[str], typer.Option("--grid", help="path=v1,v2,... (repeatable: cross product)")],
    set_: SetOpt = None,
    out: TableOutOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    quiet: QuietOpt = False,
    interval: Annotated[bool, typer.Option("--interval", help=IntervalHelp)] = False,
) -> None:
    """What-ifs: size every point of a grid of scenario overrides; one row per point (its best candidate)."""
    from simulator import __version__, planner
    from simulator.export import write_table
    from simulator.report import Column, fmt_count, fmt_ms, fmt_number, fmt_usd, render_rows, text_col
    from simulator.scenario_files import load_raw, parse_grid, parse_override

    overrides = [parse_override(s) for s in set_ or []]
    axes = [parse_grid(g) for g in grid]
    raw, path = load_raw(scenario)
    _check_outputs(out, None)
    with _ProgressDisplay(quiet) as progress:
        rows = planner.sweep(raw, axes, overrides=overrides, where=str(path), progress=progress,
                             efficiency_variants=_variants(interval))
    if out:
        meta = {
            "scenario": str(path),
            "grid": {".".join(p): v for p, v in axes},
            "set": list(set_ or []),
            "fleetsim_version": __version__,
        }
        write_table(rows, out, units=planner.ROW_UNITS, meta=meta)
    if fmt is OutputFormat.json:
        print_json({"scenario": str(path), "grid": [".".join(p) for p, _ in axes], "rows": rows})
    else:
        cols = [text_col(".".join(p), ".".join(p)) for p, _ in axes] + [
            text_col("hardware", "hardware"),
            text_col("precision", "format"),
            text_col("layout", "layout"),
            Column("replicas", "replicas", fmt_count),
            Column("gpus", "GPUs", fmt_count),
            *((Column("gpus_p05", "GPUs p05", fmt_count), Column("gpus_p95", "GPUs p95", fmt_count))
              if interval else ()),
            Column("output_tokens_per_s_per_gpu", "tok/s/GPU", fmt_number(0)),
            Column("ttft_p99_s", "p99 TTFT (ms)", fmt_ms),
            Column("tpot_p99_s", "p99 TPOT (ms)", fmt_ms),
            Column("power_kw", "IT power (kW)", fmt_number(1)),
            Column("usd_per_hour", "$/hour", fmt_usd),
        ]
        flat = [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows]
        typer.echo(render_rows(flat, cols))
    if not any(r.get("feasible") for r in rows):
        raise NoFeasibleAnswer("no grid point has a feasible candidate (reasons above)")


@app.command()
def schema(out: Annotated[str | None, typer.Option("--out", help="write to a .json file")] = None) -> None:
    """Print the JSON Schema of scenario files (for editor completion and validation)."""
    from simulator.export import write_json
    from simulator.scenario_files import json_schema

    if out:
        check_output_path(out, (".json",))
        write_json(json_schema(), out)
        return
    print_json(json_schema())


# --------------------------------------------------------------------------------------------- entry
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# Usage errors and aborts as typer raises them (recent typer vendors click; older typer re-exports
# click's classes): found through typer's own exception classes, so click need not be installed.
_USAGE_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ABORTS = (typer.Abort,)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, mapping errors to one line and an exit code."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="fleetsim")
    except _USAGE_ERRORS as exc:
        typer.echo(f"error: {_one_line(exc.format_message())}", err=True)
        sys.exit(2)
    except InputError as exc:
        typer.echo(f"error: {_one_line(str(exc))}", err=True)
        sys.exit(2)
    except NoFeasibleAnswer as exc:
        typer.echo(f"no feasible answer: {_one_line(str(exc))}", err=True)
        sys.exit(1)
    except _ABORTS:
        typer.echo("aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


# --------------------------------------------------------------------------------------------- calibration
# (registered at import; kept at the end of the module, after the entry point, in its own section)
@app.command()
def calibrate(
    results: Annotated[
        str | None, typer.Option("--results", help="results CSV (default: shipped MLPerf data)")
    ] = None,
    write: Annotated[bool, typer.Option("--write", help="update hardware_profiles/calibration.yaml")] = False,
    out: Annotated[str | None, typer.Option("--out", help="write the calibration YAML here instead")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="worker processes for the simulation correction")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Fit efficiency factors per accelerator x format x framework to measured MLPerf results."""
    from simulator import calibration as cal

    if jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    log = None if quiet else (lambda msg: typer.echo(msg, err=True))
    result = cal.calibrate(results, write_to=out, write_file=write, log=log, jobs=jobs)
    result.pop("document", None)
    if fmt is OutputFormat.json:
        print_json(result)
        return
    typer.echo(
        f"{'group':<34}{'rows':>6}{'compute':>9}{'memory':>8}{'network':>9}{'overhead ms':>13}"
        f"{'per seq us':>12}{'APE %':>8}"
    )
    for key, g in result["groups"].items():
        p = g["params"]
        ape = g.get("median_ape_pct")
        typer.echo(
            f"{key:<34}{g['n_rows']:>6}{p['compute_frac']:>9.3f}{p['memory_frac']:>8.3f}"
            f"{p['network_frac']:>9.3f}{p['step_overhead_ms']:>13.2f}{p['seq_overhead_us']:>12.1f}"
            f"{'' if ape is None else f'{ape:.1f}':>8}"
        )
    for model, entry in result["model_factors"].items():
        corrections = entry.get("sim_correction") or {}
        if corrections:
            typer.echo(f"simulation correction {model}: "
                       + ", ".join(f"{sc} x{math.exp(v):.2f}" for sc, v in corrections.items()))
    typer.echo(
        f"fitted on {result['n_rows']} rows; "
        + (f"wrote {result['path']}" if result["path"] else "not written (use --write or --out)")
    )


@app.command()
def validate(
    results: Annotated[
        str | None, typer.Option("--results", help="results CSV (default: shipped MLPerf data)")
    ] = None,
    cv: Annotated[str | None, typer.Option("--cv", help="out-of-sample: version, system or scale")] = None,
    mode: Annotated[str, typer.Option("--mode", help="full (simulation) or fast (steady state)")] = "full",
    jobs: Annotated[int, typer.Option("--jobs", help="worker processes")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Predict MLPerf results from their descriptive columns only and report the error."""
    from simulator import validation as val

    if jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    log = None if quiet else (lambda msg: typer.echo(msg, err=True))
    result = val.validate(results, cv=cv, mode=mode, jobs=jobs, log=log)
    if fmt is OutputFormat.json:
        print_json(
            {
                "rows": result["rows"],
                "summary": result["summary"],
                "folds": result["folds"],
                "meta": result["meta"],
            }
        )
        return
    typer.echo(val.format_table(result))
