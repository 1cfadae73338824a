"""A deployment (model x accelerator x numeric formats x parallel layout x framework) and its memory plan.

Layout: a replica spans ``tp * pp`` GPUs. Tensor parallelism (TP) splits every layer's weights and
attention heads over ``tp`` GPUs of one scale-up domain; pipeline parallelism (PP) splits the layers
into ``pp`` stages. Expert parallelism (EP) shards the routed experts over the same GPUs
(``ep <= tp * pp``); attention is then either tensor-parallel (``attention="tp"``) or data-parallel
(``attention="dp"``: every GPU of a stage holds all attention weights and serves its own sequences).

Where the KV cache lives: with GQA under TP each GPU holds ``max(kv_heads / tp, 1)`` KV heads of
its stage's layers (heads replicate when tp exceeds them). MLA's compressed latent has no heads to
split: under TP every GPU of a stage holds the whole latent of every sequence (replicated), under
attention-DP each GPU holds the latents of its own sequences only, so the replica holds ``tp`` times
more tokens.

Memory per GPU = weights + reserve (activations, workspace, runtime) + KV cache; a layout that does
not fit raises ``InputError`` with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simulator import units
from simulator.efficiency import (
    Efficiency,
    default_framework,
    lookup_efficiency,
    memory_settings,
    normalise_framework,
)
from simulator.errors import InputError
from simulator.formats import FORMATS, Precision, gemm_compute_family, resolve_precision
from simulator.hardware import Accelerator, load_accelerator
from simulator.models import ModelSpec, Speculative, load_model, no_speculative_error

_HIGH_PRECISION_MIN_BYTES = FORMATS["fp8"].bytes_per_element  # embeddings / lm_head never below 8 bits


@dataclass(frozen=True)
class Layout:
    """Parallel layout of one replica. Invariants: all >= 1, ep <= tp * pp, attention in {'tp','dp'}."""

    tp: int = 1
    pp: int = 1
    ep: int = 1
    attention: str = "tp"
    speculative: bool = False  # speculative decoding with the model's draft (``ModelSpec.speculative``)

    @property
    def schedulers(self) -> int:
        """Batch schedulers of one replica: each attention-DP rank schedules its own batch (and has its own
        ``max_num_seqs``), else one."""
        return self.tp if self.attention == "dp" else 1

    @property
    def gpus(self) -> int:
        """GPUs per replica."""
        return self.tp * self.pp

    def label(self) -> str:
        """e.g. 'TP8' or 'TP4 PP2 EP8 attn-DP'."""
        parts = [f"TP{self.tp}"]
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        if self.attention == "dp":
            parts.append("attn-DP")
        if self.speculative:
            parts.append("spec")
        return " ".join(parts)


@dataclass(frozen=True)
class Deployment:
    """Everything the iteration-time model and memory plan need, resolved to SI objects."""

    model: ModelSpec
    accelerator: Accelerator
    precision: Precision
    precision_name: str
    layout: Layout
    framework: str
    compute_family: str
    efficiency: Efficiency
    max_num_seqs: int = 1024
    max_batched_tokens: int = 8192
    notes: tuple[str, ...] = field(default=())
    step_time_scale: float = 1.0  # multiplies kernel time (1.0 = the roofline model)


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise InputError(f"{name} must be a positive integer, got {value}")


def _validate_layout(model: ModelSpec, acc: Accelerator, layout: Layout) -> None:
    for name in ("tp", "pp", "ep"):
        _check_positive(name, getattr(layout, name))
    if layout.attention not in ("tp", "dp"):
        raise InputError(f"attention must be 'tp' or 'dp', got '{layout.attention}'")
    if layout.tp > acc.scaleup_domain_gpus:
        raise InputError(
            f"tp={layout.tp} exceeds the {acc.id} scale-up domain of {acc.scaleup_domain_gpus} GPUs; "
            f"valid tp: 1..{acc.scaleup_domain_gpus}"
        )
    if model.num_heads % layout.tp:
        raise InputError(
            f"tp={layout.tp} does not divide the {model.num_heads} attention heads of {model.id}"
        )
    if layout.pp > model.num_layers:
        raise InputError(f"pp={layout.pp} exceeds the {model.num_layers} layers of {model.id}")
    if layout.ep > 1 and model.num_experts == 0:
        raise InputError(f"ep={layout.ep} needs a mixture-of-experts model; {model.id} is dense (use ep=1)")
    if layout.ep > layout.gpus:
        raise InputError(f"ep={layout.ep} exceeds the replica's tp*pp={layout.gpus} GPUs")
    if layout.speculative and model.speculative is None:
        raise no_speculative_error(model.id)


def make_deployment(
    model: str | ModelSpec,
    hardware: str | Accelerator,
    precision: str = "fp8",
    layout: Layout | None = None,
    *,
    framework: str | None = None,
    weights: str | None = None,
    activations: str | None = None,
    kv_precision: str | None = None,
    efficiency: Efficiency | None = None,
    max_num_seqs: int = 1024,
    max_batched_tokens: int = 8192,
    step_time_scale: float = 1.0,
) -> Deployment:
    """Resolve names into a validated ``Deployment``; raises ``InputError`` on any bad input.

    ``efficiency`` None: the calibrated efficiency of the group. ``step_time_scale``: a kernel-time
    multiplier (1.0: the roofline model; the calibrated per-model factor is a throughput multiplier applied
    by sizing, see ``efficiency.model_throughput_factor``).
    """
    spec = load_model(model) if isinstance(model, str) else model
    acc = load_accelerator(hardware) if isinstance(hardware, str) else hardware
    layout = layout or Layout()
    _validate_layout(spec, acc, layout)
    _check_positive("max_num_seqs", max_num_seqs)
    _check_positive("max_batched_tokens", max_batched_tokens)
    prec = resolve_precision(
        precision, acc.vendor, weights=weights, activations=activations, kv_cache=kv_precision
    )
    family = gemm_compute_family(prec, acc.supported_compute_formats)
    fw = normalise_framework(framework) if framework else default_framework(acc.vendor)
    eff = efficiency or lookup_efficiency(acc.id, acc.architecture, family, fw)
    notes = ()
    if FORMATS[prec.weights].compute_family != family:
        notes = (f"{prec.weights} weights run weight-only-quantised at the {family} rate on {acc.id}",)
    scale = step_time_scale
    if not scale > 0:
        raise InputError(f"step_time_scale must be > 0, got {scale}")
    return Deployment(
        spec, acc, prec, precision.lower(), layout, fw, family, eff, max_num_seqs, max_batched_tokens, notes,
        scale,
    )


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory budget of a replica and the KV capacity it leaves (all bytes / tokens)."""

    hbm_capacity_bytes: float
    weights_bytes_per_gpu: float
    reserve_bytes_per_gpu: float
    kv_budget_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    kv_capacity_tokens: int
    kv_block_tokens: int
    kv_capacity_blocks: int
    fits: bool

    def max_batch(self, tokens_per_sequence: int) -> int:
        """Largest number of sequences of this total length whose KV fits at once."""
        blocks_per_seq = math.ceil(tokens_per_sequence / self.kv_block_tokens)
        return self.kv_capacity_blocks // blocks_per_seq if blocks_per_seq else 0


def non_expert_precision(dep: Deployment) -> Precision:
    """Precision of every weight but the routed experts: the deployment's, unless the model keeps those
    weights wider (``ModelSpec.non_expert_weights_min_format``, e.g. gpt-oss-120b ships only its experts in
    MXFP4); then weights and activations of those GEMMs run in that format."""
    floor = dep.model.non_expert_weights_min_format
    prec = dep.precision
    if floor is None or FORMATS[floor].bytes_per_element <= prec.weight_bytes_per_param:
        return prec
    wider = FORMATS[floor].bytes_per_element > prec.activation_bytes_per_element
    return Precision(weights=floor, activations=floor if wider else prec.activations, kv_cache=prec.kv_cache)


def weights_bytes_per_gpu(dep: Deployment) -> float:
    """Weight bytes on the busiest GPU of a replica: layers split over tp*pp (experts over the replica's
    GPUs, attention replicated under attention-DP); embeddings and lm_head kept at >= 8 bits; weights
    other than routed experts at ``non_expert_precision``."""
    m, lay = dep.model, dep.layout
    w_bytes = dep.precision.weight_bytes_per_param
    other_bytes = non_expert_precision(dep).weight_bytes_per_param
    hp_bytes = max(other_bytes, _HIGH_PRECISION_MIN_BYTES)
    embed = (m.embedding_params + m.lm_head_params) * hp_bytes / (lay.tp * lay.pp)
    routed = m.num_moe_layers * m.num_experts * m.expert_params
    other_dense = m.dense_params - m.lm_head_params - m.attention_params
    attention_share = 1.0 / lay.pp if lay.attention == "dp" else 1.0 / lay.gpus
    return (
        embed + m.attention_params * other_bytes * attention_share
        + (other_dense * other_bytes + routed * w_bytes) / lay.gpus
        + draft_bytes_per_gpu(dep)
    )


def draft(dep: Deployment) -> Speculative | None:
    """The speculative draft the deployment decodes with (None without speculative decoding)."""
    return dep.model.speculative if dep.layout.speculative else None


def draft_bytes_per_gpu(dep: Deployment) -> float:
    """Weight bytes of the speculative draft on one GPU (split over the replica's GPUs; 0 without)."""
    spec = draft(dep)
    if spec is None:
        return 0.0
    return spec.draft_params * FORMATS[spec.draft_weights_format].bytes_per_element / dep.layout.gpus


def tokens_per_step(dep: Deployment) -> float:
    """Tokens a decoding sequence emits per engine step: the draft's mean acceptance length with
    speculative decoding, else 1."""
    spec = draft(dep)
    return spec.acceptance_length_tokens if spec is not None else 1.0


def prefill_budget_tokens(dep: Deployment, decode_seqs: float) -> float:
    """Prompt tokens one engine step can prefill beside ``decode_seqs`` decoding sequences: the step's
    token budget less their query tokens, per emitted token with speculative decoding (an engine step is
    1 / ``tokens_per_step`` of a real one, see ``StepModel.step_time_s``)."""
    return (dep.max_batched_tokens - decode_seqs * query_tokens_per_seq(dep)) / tokens_per_step(dep)


def query_tokens_per_seq(dep: Deployment) -> int:
    """Tokens a decoding sequence feeds the model per step: its drafts plus one with speculative
    decoding, else 1."""
    spec = draft(dep)
    return spec.draft_tokens + 1 if spec is not None else 1


def kv_bytes_per_token_per_gpu(dep: Deployment) -> float:
    """KV bytes one token of context costs on one GPU (full-attention layers; see module docstring)."""
    m, lay = dep.model, dep.layout
    per_token = m.kv_elements_per_token_full * dep.precision.kv_bytes_per_element / lay.pp
    if lay.attention == "dp":
        return per_token  # attention-DP: the whole KV of a sequence lives on the GPU serving it
    return per_token * m.kv_per_gpu_frac(lay.tp)


def plan_memory(dep: Deployment) -> MemoryPlan:
    """Per-GPU memory plan. ``fits`` is False when weights + reserve leave no room for KV."""
    settings = memory_settings()
    capacity = dep.accelerator.hbm_capacity_bytes
    weights = weights_bytes_per_gpu(dep)
    reserve = settings["runtime_reserve_bytes"] + settings["reserve_frac"] * capacity
    budget = capacity - weights - reserve
    per_token = kv_bytes_per_token_per_gpu(dep)
    seqs_per_gpu_share = dep.layout.tp if dep.layout.attention == "dp" else 1
    tokens = int(max(budget, 0.0) / per_token) * seqs_per_gpu_share if per_token > 0 else 0
    block = settings["kv_block_tokens"]
    return MemoryPlan(
        capacity, weights, reserve, budget, per_token, tokens, block, tokens // block, budget > 0
    )


def require_fit(dep: Deployment, plan: MemoryPlan) -> None:
    """Raise ``InputError`` with the numbers when the layout does not fit in memory."""
    if not plan.fits or plan.kv_capacity_blocks < 1:
        need = plan.weights_bytes_per_gpu + plan.reserve_bytes_per_gpu
        raise InputError(
            f"{dep.model.id} {dep.precision_name} {dep.layout.label()} does not fit on {dep.accelerator.id}: "
            f"needs {units.bytes_to_gib(need):.1f} GiB per GPU for weights and reserve, "
            f"has {units.bytes_to_gib(plan.hbm_capacity_bytes):.1f} GiB; "
            "try a larger tp/pp or a smaller format"
        )
