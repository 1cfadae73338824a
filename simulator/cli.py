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
from simulator.models import list_models

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
