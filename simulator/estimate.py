"""``fleetsim estimate``: the memory plan and iteration-time model of one deployment, no simulation.

For a batch of ``batch`` sequences with ``input_tokens`` prompts and ``output_tokens`` outputs it
reports: whether the layout fits, weight bytes per GPU, KV capacity, the largest batch that fits,
the prefill time of one prompt, the decode step time at the batch (context = input + output/2, the
mean over a sequence's decode), single-request TTFT and TPOT, and the saturated decode throughput
per GPU (largest batch that fits, capped by the scheduler's ``max_num_seqs``).
"""

from __future__ import annotations

from typing import Any

from simulator.deployment import Deployment, plan_memory, require_fit, tokens_per_step
from simulator.efficiency import (
    mlperf_tpot_limits_s,
    model_throughput_factor,
    nearest_mlperf_scenario,
    sizing_throughput_factor,
)
from simulator.errors import InputError
from simulator.iteration import StepModel


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def estimate(dep: Deployment, *, batch: int, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The estimate as a flat dict of unit-suffixed keys (SI units)."""
    for name, value in (("batch", batch), ("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        _positive(name, value)
    plan = plan_memory(dep)
    require_fit(dep, plan)
    model = StepModel(dep)
    seq_tokens = input_tokens + output_tokens
    largest = min(plan.max_batch(seq_tokens), dep.max_num_seqs)
    mean_ctx = input_tokens + output_tokens / 2
    tau = tokens_per_step(dep)  # > 1 with speculative decoding: step_time_s is then per emitted token
    decode_s = model.time_of(model.decode_shape(batch, mean_ctx))
    single_tpot_s = model.time_of(model.decode_shape(1, mean_ctx))
    saturated_s = model.time_of(model.decode_shape(largest, mean_ctx)) if largest else float("inf")
    gpus = dep.layout.gpus
    return {
        "model": dep.model.id,
        "hardware": dep.accelerator.id,
        "hardware_status": dep.accelerator.status,
        "precision": dep.precision_name,
        "weights_format": dep.precision.weights,
        "activations_format": dep.precision.activations,
        "kv_cache_format": dep.precision.kv_cache,
        "gemm_compute_format": dep.compute_family,
        "framework": dep.framework,
        "tp": dep.layout.tp,
        "pp": dep.layout.pp,
        "ep": dep.layout.ep,
        "speculative": dep.layout.speculative,
        "gpus_per_replica": gpus,
        "fits": plan.fits,
        "hbm_capacity_bytes_per_gpu": plan.hbm_capacity_bytes,
        "weights_bytes_per_gpu": plan.weights_bytes_per_gpu,
        "reserve_bytes_per_gpu": plan.reserve_bytes_per_gpu,
        "kv_bytes_per_token_per_gpu": plan.kv_bytes_per_token_per_gpu,
        "kv_capacity_tokens": plan.kv_capacity_tokens,
        "kv_capacity_blocks": plan.kv_capacity_blocks,
        "largest_batch": largest,
        "batch": batch,
        "batch_fits": batch <= plan.max_batch(seq_tokens),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "prefill_s": model.prefill_time_s(input_tokens),
        "decode_step_s": decode_s * tau,
        "tokens_per_step": tau,
        "decode_context_tokens": mean_ctx,
        "single_request_ttft_s": model.prefill_time_s(input_tokens),
        "single_request_tpot_s": single_tpot_s,
        "decode_output_tokens_per_s_per_gpu_at_batch": batch / decode_s / gpus,
        "saturated_decode_output_tokens_per_s_per_gpu": largest / saturated_s / gpus if largest else 0.0,
        "efficiency_source": dep.efficiency.source,
        "model_throughput_factor": model_throughput_factor(dep.model.id),
        "notes": [*dep.notes, *factor_notes(dep.model.id)],
    }


def factor_notes(model_id: str, tpot_limit_s: float | None = None) -> list[str]:
    """A note when the model has a calibrated throughput factor (``efficiency.model_throughput_factor``);
    with ``tpot_limit_s`` (a sizing), the factor the sizing simulations apply, simulation correction
    included (``efficiency.sizing_throughput_factor``)."""
    factor = model_throughput_factor(model_id)
    if factor == 1.0:
        return []
    why = (f"calibrated {model_id} factor (MLPerf Server rows measured {factor:.2f}x this roofline model's "
           f"throughput across accelerators)")
    if tpot_limit_s is None:
        corrections = ", ".join(
            f"{sc.capitalize()} x{sizing_throughput_factor(model_id, tpot_s) / factor:.2f}"
            for sc, tpot_s in mlperf_tpot_limits_s(model_id).items())
        then = "; sizing runs also apply the simulation correction of the nearest MLPerf scenario"
        return [f"sizing multiplies throughput by x{factor:.2f}: {why}"
                + (f"{then} ({corrections})" if corrections else "")]
    total = sizing_throughput_factor(model_id, tpot_limit_s)
    scenario = nearest_mlperf_scenario(model_id, tpot_limit_s)
    return [f"sizing multiplies throughput by x{total:.2f}: {why}, times x{total / factor:.2f} simulation "
            f"correction (simulation vs the fast rule the factors are fitted on, measured at MLPerf "
            f"{scenario.capitalize()}, the scenario whose p99 TPOT limit is nearest)"]
