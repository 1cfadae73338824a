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

import click
import typer

from simulator import units
from simulator.deployment import Layout, make_deployment
from simulator.errors import InputError, NoFeasibleAnswer
from simulator.estimate import estimate as run_estimate
from simulator.hardware import list_accelerators, load_accelerator
from simulator.export import check_output_path, write_columns
from simulator.metrics import Slo
from simulator.mlperf import slo_limits_s
from simulator.models import list_models
from simulator.simulation import records_columns
from simulator.simulation import run as run_simulation
from simulator.workload import OfflineArrivals, PoissonArrivals, Workload, benchmark_workload, canonical_benchmark

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
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
            "id": a.id, "name": a.name, "vendor": a.vendor, "status": a.status,
            "hbm_capacity_gib": units.bytes_to_gib(a.hbm_capacity_bytes),
            "hbm_bandwidth_tb_per_s": a.hbm_bandwidth_bytes_per_s / units.TB,
            "formats": ",".join(a.supported_compute_formats), "scaleup_domain_gpus": a.scaleup_domain_gpus,
        }
        for a in list_accelerators()
    ]
    if fmt is OutputFormat.json:
        print_json(rows)
        return
    typer.echo(f"{'id':<18}{'vendor':<8}{'status':<11}{'HBM GiB':>8}{'TB/s':>7}  {'formats':<18}{'domain':>6}")
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
        print_json({"id": a.id, "name": a.name, "vendor": a.vendor, "architecture": a.architecture,
                    "status": a.status, "figures": figures, "sources": dict(a.sources),
                    "unknown_figures": list(a.unknown_figures),
                    "ranges": {k: a.figure_range(k) for k in a.sources if k in a.ranges}})
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
        {"id": m.id, "family": m.family, "attention": m.attention, "layers": m.num_layers,
         "total_params": m.total_params, "active_params": m.active_params,
         "kv_elements_per_token": m.kv_elements_per_token_full + m.kv_elements_per_token_sliding}
        for m in list_models()
    ]
    if fmt is OutputFormat.json:
        print_json(rows)
        return
    typer.echo(f"{'id':<22}{'family':<8}{'attn':<6}{'layers':>7}{'total B':>10}{'active B':>10}{'KV B/tok fp8':>14}")
    for r in rows:
        typer.echo(
            f"{r['id']:<22}{r['family']:<8}{r['attention']:<6}{r['layers']:>7}"
            f"{units.millions(r['total_params']) / units.KB:>10.1f}{units.millions(r['active_params']) / units.KB:>10.1f}"
            f"{r['kv_elements_per_token']:>14,.0f}"
        )


# --------------------------------------------------------------------------------------------- estimate
ModelOpt = Annotated[str, typer.Option("--model", help="model id, e.g. llama2-70b")]
HardwareOpt = Annotated[str, typer.Option("--hardware", help="accelerator id, e.g. mi355x")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="named precision: fp4, fp8, bf16, ...")]


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
    framework: Annotated[str | None, typer.Option("--framework", help="trtllm, vllm or sglang")] = None,
    kv_precision: Annotated[str | None, typer.Option("--kv-precision")] = None,
    weights_precision: Annotated[str | None, typer.Option("--weights-precision")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Memory plan and step times of one deployment (no simulation)."""
    dep = make_deployment(
        model, hardware, precision, Layout(tp=tp, pp=pp, ep=ep, attention=attention),
        framework=framework, kv_precision=kv_precision, weights=weights_precision,
    )
    result = run_estimate(dep, batch=batch, input_tokens=input_tokens, output_tokens=output_tokens)
    if fmt is OutputFormat.json:
        print_json(result)
        return
    _print_estimate(result)


def _print_estimate(r: dict[str, Any]) -> None:
    ms = units.s_to_ms
    status = "  (ANNOUNCED hardware: projected figures)" if r["hardware_status"] == "announced" else ""
    typer.echo(f"{r['model']} on {r['gpus_per_replica']}x {r['hardware']} {r['precision']} "
               f"(w={r['weights_format']} a={r['activations_format']} kv={r['kv_cache_format']}, "
               f"GEMMs at {r['gemm_compute_format']}), TP{r['tp']} PP{r['pp']} EP{r['ep']}, {r['framework']}{status}")
    print_pairs([
        ("fits", "yes" if r["fits"] else "no"),
        ("weights per GPU", units.fmt_bytes(r["weights_bytes_per_gpu"])),
        ("reserve per GPU", units.fmt_bytes(r["reserve_bytes_per_gpu"])),
        ("KV cache per token per GPU", f"{r['kv_bytes_per_token_per_gpu']:,.0f} bytes"),
        ("KV capacity", f"{r['kv_capacity_tokens']:,} tokens ({r['kv_capacity_blocks']:,} blocks)"),
        (f"largest batch ({r['input_tokens']}+{r['output_tokens']} tokens)", f"{r['largest_batch']:,}"),
        (f"prefill of one {r['input_tokens']}-token input", f"{ms(r['prefill_s']):.2f} ms"),
        (f"decode step, batch {r['batch']} at context {r['decode_context_tokens']:.0f}",
         f"{ms(r['decode_step_s']):.2f} ms" + ("" if r["batch_fits"] else "  (batch exceeds KV capacity)")),
        ("single-request TTFT", f"{ms(r['single_request_ttft_s']):.2f} ms"),
        ("single-request TPOT", f"{ms(r['single_request_tpot_s']):.2f} ms"),
        (f"decode throughput at batch {r['batch']}",
         f"{r['decode_output_tokens_per_s_per_gpu_at_batch']:,.0f} output tokens/s per GPU"),
        ("saturated decode throughput",
         f"{r['saturated_decode_output_tokens_per_s_per_gpu']:,.0f} output tokens/s per GPU "
         f"(batch {r['largest_batch']})"),
        ("efficiency factors", r["efficiency_source"]),
    ])
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
    offline: Annotated[int | None, typer.Option("--offline", help="N requests all at t=0 (MLPerf Offline)")] = None,
    benchmark: Annotated[str | None, typer.Option("--benchmark", help="token-length preset; default: the model's")] = None,
    duration: Annotated[float, typer.Option("--duration", help="seconds of arrivals")] = 120.0,
    router: Annotated[str, typer.Option("--router")] = "least-outstanding",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    pp: Annotated[int, typer.Option("--pp")] = 1,
    ep: Annotated[int, typer.Option("--ep")] = 1,
    framework: Annotated[str | None, typer.Option("--framework")] = None,
    kv_precision: Annotated[str | None, typer.Option("--kv-precision")] = None,
    slo: Annotated[str | None, typer.Option("--slo", help="mlperf-server or mlperf-interactive")] = None,
    ttft_p99_ms: Annotated[float | None, typer.Option("--ttft-p99-ms")] = None,
    tpot_p99_ms: Annotated[float | None, typer.Option("--tpot-p99-ms")] = None,
    requests_out: Annotated[str | None, typer.Option("--requests-out", help="per-request records .parquet/.csv")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Simulate a fleet of identical replicas serving a workload; report latency tails and throughput."""
    dep = make_deployment(model, hardware, precision, Layout(tp=tp, pp=pp, ep=ep), framework=framework,
                          kv_precision=kv_precision)
    bench = benchmark or dep.model.mlperf_benchmark
    wl = _workload(bench, rate, target_tps, offline)
    slo_obj = _slo_for(bench, slo, ttft_p99_ms, tpot_p99_ms)
    if requests_out:
        check_output_path(requests_out, (".parquet", ".csv"))
    outcome = run_simulation(dep, wl, num_replicas=replicas, duration_s=duration, router=router, seed=seed,
                             slo=slo_obj)
    summary = outcome.summary.to_dict()
    result = {
        "model": dep.model.id, "hardware": dep.accelerator.id, "precision": dep.precision_name, "tp": tp, "pp": pp,
        "ep": ep, "framework": dep.framework, "replicas": replicas, "gpus": replicas * dep.layout.gpus,
        "router": router, "seed": seed, "benchmark": bench, "duration_s": None if offline else duration,
        "offered_rate_per_s": None if offline else wl.arrivals.mean_rate_per_s,
        "offline_requests": offline, "num_requests": outcome.num_requests,
        "slo_ttft_p99_s": slo_obj.ttft_p99_s if slo_obj else None,
        "slo_tpot_p99_s": slo_obj.tpot_p99_s if slo_obj else None,
        **summary,
        "output_tokens_per_s_per_gpu": summary["output_tokens_per_s"] / (replicas * dep.layout.gpus),
    }
    if slo_obj is not None:
        result["slo_attainment"] = summary.get("slo_attainment_frac")
    if requests_out:
        columns, col_units = records_columns(outcome.run)
        write_columns(columns, requests_out, units=col_units, meta={"inputs": {k: result[k] for k in list(result)[:17]}})
    if fmt is OutputFormat.json:
        print_json(result)
        return
    _print_simulation(result)


def _print_simulation(r: dict[str, Any]) -> None:
    ms = units.s_to_ms
    load = f"offline {r['offline_requests']} requests" if r["offline_requests"] else (
        f"{r['offered_rate_per_s']:.2f} req/s for {r['duration_s']:.0f} s")
    typer.echo(f"{r['model']} on {r['replicas']} x TP{r['tp']} {r['hardware']} {r['precision']} ({r['gpus']} GPUs), "
               f"{load}, router {r['router']}, seed {r['seed']}")
    if r["saturated"]:
        typer.echo(f"SATURATED: {r['saturation_reason']} (the load exceeds what this fleet can carry)")
    rows = [
        ("completed requests", f"{r['completed_requests']:,} of {r['arrived_requests']:,}"),
        ("output tokens/s (MLPerf)", f"{r['output_tokens_per_s']:,.0f}  ({r['output_tokens_per_s_per_gpu']:,.0f} per GPU)"),
        ("output tokens/s (steady window)", f"{r['steady_output_tokens_per_s']:,.0f}"),
    ]
    for name in ("ttft", "tpot", "e2e", "queue_delay"):
        p50, p99 = r.get(f"{name}_p50_s"), r.get(f"{name}_p99_s")
        if p50 is None or not math.isfinite(p50):
            continue
        lo, hi = r.get(f"{name}_p99_ci_low_s"), r.get(f"{name}_p99_ci_high_s")
        ci = f"  (95% CI {ms(lo):.1f}-{ms(hi):.1f})" if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) else ""
        rows.append((f"{name.upper().replace('_', ' ')} p50 / p99", f"{ms(p50):.1f} / {ms(p99):.1f} ms{ci}"))
    rows.append(("utilisation", f"{units.frac_to_pct(r['utilisation_frac']):.1f}%"))
    rows.append(("KV occupancy (mean)", f"{units.frac_to_pct(r['kv_occupancy_mean_frac']):.1f}%"))
    rows.append(("preemptions", f"{r['preemptions']:,}"))
    if r.get("slo_attainment") is not None:
        rows.append(("SLO attainment", f"{units.frac_to_pct(r['slo_attainment']):.2f}% (p99 TTFT <= "
                     f"{ms(r['slo_ttft_p99_s']):.0f} ms, p99 TPOT <= {ms(r['slo_tpot_p99_s']):.0f} ms)"))
    print_pairs(rows)


# --------------------------------------------------------------------------------------------- entry
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# Typer >= 0.24 vendors click: catch both its exception classes and click's own.
_USAGE_ERRORS = tuple(
    {click.exceptions.UsageError, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")}
)
_ABORTS = tuple({click.exceptions.Abort, typer.Abort})


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
