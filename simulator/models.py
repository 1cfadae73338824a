"""The model catalog: architectures as data (``hardware_profiles/models/<id>.yaml``) plus derived counts.

Every count here is a plain number of ELEMENTS (parameters, cached values) or FLOPs; bytes come from
numeric formats elsewhere. Counting rules (the same for every model):

- ``total_params`` = input embedding + every served layer (attention, norms, dense MLPs, shared
  experts, routers, all routed experts) + final norm + lm_head (a tied lm_head is counted once).
  Multi-token-prediction (MTP) layers and vision encoders are NOT served and NOT counted.
- ``active_params`` = ``total_params`` minus the routed experts a token does not use.
- ``dense_params`` = what every token touches except the input embedding (a table lookup):
  attention, norms, dense MLPs, shared experts, routers, lm_head. Routed experts are excluded.
- KV cache: GQA caches ``2 * num_kv_heads * head_dim`` elements per token per layer; MLA caches the
  compressed latent ``kv_lora_rank + qk_rope_head_dim``. Sliding-window layers keep at most the window.
- Attention FLOPs per (query token, cached key): GQA ``4 * num_heads * head_dim`` per layer (QK^T and PV).
  MLA uses the ABSORBED form that decode kernels run (FlashMLA, vLLM/SGLang decode): scores over the
  latent+rope (``2 * H * (kv_lora_rank + rope)``) and the weighted sum over the latent
  (``2 * H * kv_lora_rank``). The absorbed form over-counts prefill, where engines decompress K/V and
  spend ``2 * H * (nope + rope) + 2 * H * v_head_dim`` per key (3.4x less for DeepSeek-R1). The
  absorption GEMMs themselves equal ``kv_b_proj`` and are already in ``gemm_flops_per_token``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulator import units
from simulator.data import profiles_dir
from simulator.errors import InputError, unknown_name
from simulator.formats import FORMATS

_POS = Field(gt=0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MoeFile(_Strict):
    """The mixture-of-experts block of a model file."""

    num_experts: int = Field(gt=0, description="routed experts per MoE layer")
    experts_per_token: int = Field(gt=0, description="routed experts each token uses (top-k)")
    moe_intermediate_size: int = Field(gt=0, description="intermediate width of one routed expert")
    num_shared_experts: int = Field(0, ge=0, description="always-on experts of the same width")
    first_dense_layers: int = Field(0, ge=0, description="leading layers with a dense MLP instead of MoE")
    expert_bias: bool = Field(False, description="expert projections carry biases")
    router_bias: bool = Field(False, description="router has one bias/correction value per expert")

    @model_validator(mode="after")
    def _top_k_fits(self) -> MoeFile:
        if self.experts_per_token > self.num_experts:
            raise ValueError("experts_per_token exceeds num_experts")
        return self


class MlaFile(_Strict):
    """Multi-head latent attention dimensions (DeepSeek-V2/V3 style)."""

    kv_lora_rank: int = _POS
    q_lora_rank: int | None = Field(None, gt=0, description="None: q projected directly from hidden")
    qk_rope_head_dim: int = _POS
    qk_nope_head_dim: int = _POS
    v_head_dim: int = _POS


class SlidingWindowFile(_Strict):
    """Sliding-window attention: how many layers slide, and the window."""

    window_tokens: int = _POS
    num_sliding_layers: int = _POS


class QuantisationFile(_Strict):
    """Which weights the benchmark's numeric format applies to (absent: every linear layer)."""

    scope: Literal["routed_experts"] = Field(description="the format applies to the routed experts only")
    other_weights_format: str = Field(description="format of every other weight (attention, router, "
                                      "shared/dense MLPs, embeddings, lm_head) when the format is narrower")
    source: str = Field(min_length=1)
    note: str | None = None

    @model_validator(mode="after")
    def _known_format(self) -> QuantisationFile:
        if self.other_weights_format not in FORMATS:
            raise ValueError(f"unknown other_weights_format '{self.other_weights_format}'; "
                             f"valid: {', '.join(sorted(FORMATS))}")
        return self


class SpeculativeFile(_Strict):
    """Speculative decoding the model can be served with: a draft proposes ``draft_tokens`` tokens per
    step, the model verifies them in one forward pass and emits ``acceptance_length_tokens`` on average
    (the accepted drafts plus its own next token)."""

    method: Literal["mtp", "eagle3", "draft_model"]
    draft_tokens: int = Field(gt=0, le=16, description="drafted per step (MLPerf: speculative-num-steps)")
    acceptance_length_tokens: float = Field(gt=1.0, description="mean tokens emitted per verification step")
    draft_params_b: float = Field(gt=0, description="draft weights held in memory (billion parameters)")
    draft_active_params_b: float = Field(gt=0, description="parameters one draft forward reads (billion)")
    draft_weights_format: str
    mlperf_scenarios: list[Literal["offline", "server", "interactive"]] = Field(
        default_factory=list, description="MLPerf scenarios whose rules allow it for this benchmark")
    source: str = Field(min_length=1)
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SpeculativeFile:
        if self.acceptance_length_tokens > self.draft_tokens + 1:
            raise ValueError(f"acceptance_length_tokens {self.acceptance_length_tokens} exceeds "
                             f"draft_tokens + 1 = {self.draft_tokens + 1}")
        if self.draft_weights_format not in FORMATS:
            raise ValueError(f"unknown draft_weights_format '{self.draft_weights_format}'; "
                             f"valid: {', '.join(sorted(FORMATS))}")
        return self


class ModelFile(_Strict):
    """Schema of ``hardware_profiles/models/<id>.yaml`` (strict: unknown keys are errors)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    name: str
    mlperf_benchmark: str = Field(description="MLPerf benchmark family name, e.g. llama2-70b")
    mlperf_benchmark_names: list[str] = Field(min_length=1, description="exact results.csv benchmark names")
    family: Literal["dense", "moe"]
    attention: Literal["gqa", "mla"]
    num_layers: int = _POS
    hidden_size: int = _POS
    num_heads: int = _POS
    num_kv_heads: int = _POS
    head_dim: int | None = Field(None, gt=0, description="required for gqa; mla derives nope+rope")
    intermediate_size: int | None = Field(None, gt=0, description="dense-MLP width (dense layers only)")
    vocab_size: int = _POS
    max_position_embeddings: int = _POS
    tie_word_embeddings: bool
    attention_bias: bool = False
    attention_sinks: bool = False
    qk_norm: bool = False
    moe: MoeFile | None = None
    mla: MlaFile | None = None
    sliding_window: SlidingWindowFile | None = None
    quantisation: QuantisationFile | None = None
    mtp_layers: int = Field(0, ge=0, description="multi-token-prediction layers (never counted)")
    speculative: SpeculativeFile | None = None
    excluded_from_counts: str | None = None
    source: str = Field(min_length=1)
    published_total_params_b: float = _POS
    published_active_params_b: float = _POS
    published_active_counts_input_embedding: bool
    published_params_source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModelFile:
        if (self.family == "moe") != (self.moe is not None):
            raise ValueError("family 'moe' needs a moe block and only moe models may have one")
        if (self.attention == "mla") != (self.mla is not None):
            raise ValueError("attention 'mla' needs an mla block and only mla models may have one")
        if self.attention == "gqa":
            if self.head_dim is None:
                raise ValueError("gqa models need head_dim")
            if self.num_heads % self.num_kv_heads:
                raise ValueError("num_heads must be a multiple of num_kv_heads")
        elif self.head_dim is not None:
            raise ValueError("mla models derive head_dim (qk_nope_head_dim + qk_rope_head_dim); omit it")
        dense_layers = self.moe.first_dense_layers if self.moe else self.num_layers
        if self.moe and dense_layers >= self.num_layers:
            raise ValueError("first_dense_layers must be below num_layers")
        if dense_layers and self.intermediate_size is None:
            raise ValueError("models with dense-MLP layers need intermediate_size")
        if self.sliding_window and self.sliding_window.num_sliding_layers > self.num_layers:
            raise ValueError("num_sliding_layers exceeds num_layers")
        if self.published_active_params_b > self.published_total_params_b:
            raise ValueError("published_active_params_b exceeds published_total_params_b")
        if self.quantisation and self.moe is None:
            raise ValueError("quantisation scope 'routed_experts' needs a moe block")
        return self


@dataclass(frozen=True)
class Speculative:
    """Speculative decoding of a model (see ``SpeculativeFile``), in counts: ``draft_tokens`` drafted per
    step, ``acceptance_length_tokens`` emitted per step on average (1 < it <= draft_tokens + 1), draft
    weights of ``draft_params`` parameters of which one draft forward reads ``draft_active_params``."""

    method: str
    draft_tokens: int
    acceptance_length_tokens: float
    draft_params: float
    draft_active_params: float
    draft_weights_format: str
    mlperf_scenarios: tuple[str, ...]

    def allowed_in(self, scenario: str) -> bool:
        """Whether the MLPerf rules allow it in ``scenario`` ('offline', 'server', 'interactive')."""
        return scenario in self.mlperf_scenarios


@dataclass(frozen=True)
class ModelSpec:
    """One served model: architecture plus derived counts (elements and FLOPs, never bytes).

    Invariants: ``active_params <= total_params``; ``dense_params + num_moe_layers * num_experts *
    expert_params`` plus the input embedding (if untied) equals ``total_params``.
    """

    id: str
    name: str
    mlperf_benchmark: str
    mlperf_benchmark_names: tuple[str, ...]
    family: str
    attention: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    num_experts: int
    experts_per_token: int
    num_shared_experts: int
    num_moe_layers: int
    sliding_window_tokens: int | None
    num_sliding_layers: int
    kv_lora_rank: int | None
    total_params: float
    active_params: float
    embedding_params: float
    lm_head_params: float
    dense_params: float
    attention_params: float
    expert_params: float
    mtp_params: float
    counts_note: str
    kv_elements_per_token_full: float
    kv_elements_per_token_sliding: float
    gemm_flops_per_token: float
    attention_flops_per_query_key_full: float
    attention_flops_per_query_key_sliding: float
    published_total_params_b: float
    published_active_params_b: float
    published_active_counts_input_embedding: bool
    source: str
    non_expert_weights_min_format: str | None = None  # format floor of every weight but routed experts
    speculative: Speculative | None = None  # how it can be served with speculative decoding, if at all

    def kv_elements_for_context(self, context_tokens: int) -> float:
        """KV-cache elements one sequence of ``context_tokens`` holds, summed over layers."""
        return (self.kv_elements_per_token_full * context_tokens
                + self.kv_elements_per_token_sliding * self._windowed(context_tokens))

    def attention_flops_for_context(self, context_tokens: int) -> float:
        """Attention FLOPs for ONE query token attending to ``context_tokens`` cached keys (all layers)."""
        return (self.attention_flops_per_query_key_full * context_tokens
                + self.attention_flops_per_query_key_sliding * self._windowed(context_tokens))

    def _windowed(self, context_tokens: int) -> int:
        if context_tokens < 0:
            raise InputError(f"context_tokens must be >= 0, got {context_tokens}")
        window = self.sliding_window_tokens
        return context_tokens if window is None else min(context_tokens, window)

    def expected_distinct_experts(self, num_tokens: float) -> float:
        """Expected distinct routed experts hit in ONE MoE layer by ``num_tokens`` tokens.

        Each token picks ``k`` of ``E`` experts uniformly: ``E * (1 - (1 - k/E) ** n)``. Equals ``k`` at
        n=1, increases with n, tends to ``E``. 0 for dense models.
        """
        if num_tokens < 0:
            raise InputError(f"num_tokens must be >= 0, got {num_tokens}")
        if self.num_experts == 0:
            return 0.0
        e, k = self.num_experts, self.experts_per_token
        return e * (1.0 - (1.0 - k / e) ** num_tokens)

    def kv_heads_per_gpu(self, tp: int) -> float:
        """KV heads each tensor-parallel rank caches.

        GQA: ``max(num_kv_heads / tp, 1)`` (heads replicate once tp exceeds them). MLA: 1.0, the one
        shared latent, replicated on every rank.
        """
        if tp < 1:
            raise InputError(f"tensor-parallel degree must be >= 1, got {tp}")
        if self.attention == "mla":
            return 1.0
        return max(self.num_kv_heads / tp, 1.0)

    def kv_per_gpu_frac(self, tp: int) -> float:
        """Fraction of a token's KV elements each tensor-parallel rank holds (1.0 for MLA)."""
        if self.attention == "mla":
            return self.kv_heads_per_gpu(tp)
        return self.kv_heads_per_gpu(tp) / self.num_kv_heads


def _attention_params_per_layer(f: ModelFile) -> float:
    """Attention projections (+ biases, sinks, q/k norms, MLA latent norms) of one layer."""
    h, heads = f.hidden_size, f.num_heads
    if f.mla is not None:
        m = f.mla
        qk_dim = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank is None:
            q = h * heads * qk_dim
        else:
            q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * heads * qk_dim
        kv_a = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
        kv_b = m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
        return float(q + kv_a + kv_b + heads * m.v_head_dim * h)
    d, kv = f.head_dim or 0, f.num_kv_heads
    params = 2 * h * heads * d + 2 * h * kv * d
    if f.attention_bias:
        params += heads * d + 2 * kv * d + h
    if f.attention_sinks:
        params += heads
    if f.qk_norm:
        params += 2 * d
    return float(params)


def _mlp_params(hidden: int, intermediate: int, bias: bool = False) -> float:
    """A gated (SwiGLU) MLP: gate, up and down projections."""
    return float(3 * hidden * intermediate + (2 * intermediate + hidden if bias else 0))


def _moe_params_per_layer(f: ModelFile) -> tuple[float, float, float]:
    """(one routed expert, shared experts, router) params of one MoE layer."""
    moe = f.moe
    if moe is None:
        return 0.0, 0.0, 0.0
    expert = _mlp_params(f.hidden_size, moe.moe_intermediate_size, moe.expert_bias)
    shared = moe.num_shared_experts * _mlp_params(f.hidden_size, moe.moe_intermediate_size)
    router = f.hidden_size * moe.num_experts + (moe.num_experts if moe.router_bias else 0)
    return expert, shared, float(router)


def _head_dim(f: ModelFile) -> int:
    if f.mla is not None:
        return f.mla.qk_nope_head_dim + f.mla.qk_rope_head_dim
    return f.head_dim or 0


def _kv_per_layer(f: ModelFile) -> float:
    if f.mla is not None:
        return float(f.mla.kv_lora_rank + f.mla.qk_rope_head_dim)
    return float(2 * f.num_kv_heads * _head_dim(f))


def _attention_flops_per_layer(f: ModelFile) -> float:
    if f.mla is not None:
        latent = f.mla.kv_lora_rank
        return float(2 * f.num_heads * (latent + f.mla.qk_rope_head_dim) + 2 * f.num_heads * latent)
    return float(4 * f.num_heads * _head_dim(f))


def build_spec(f: ModelFile) -> ModelSpec:
    """Derive every count of a validated model file."""
    h, layers = f.hidden_size, f.num_layers
    num_moe_layers = layers - f.moe.first_dense_layers if f.moe else 0
    num_dense_layers = layers - num_moe_layers
    num_experts = f.moe.num_experts if f.moe else 0
    top_k = f.moe.experts_per_token if f.moe else 0

    embedding = float(f.vocab_size * h)
    lm_head = embedding
    attn_layer = _attention_params_per_layer(f)
    norms_layer = 2.0 * h
    dense_mlp_layer = _mlp_params(h, f.intermediate_size) if num_dense_layers else 0.0
    expert, shared, router = _moe_params_per_layer(f)

    attention = layers * attn_layer
    dense_params = (attention + layers * norms_layer + h + num_dense_layers * dense_mlp_layer
                    + num_moe_layers * (shared + router) + lm_head)
    routed_all = num_moe_layers * num_experts * expert
    input_table = 0.0 if f.tie_word_embeddings else embedding
    total = dense_params + routed_all + input_table
    active = total - num_moe_layers * (num_experts - top_k) * expert

    # One MTP module as stored in the checkpoint: eh_proj (2h -> h), enorm, hnorm, one MoE decoder layer,
    # its output norm and its own copies of the embedding and lm_head.
    mtp_layer = attn_layer + norms_layer + shared + router + num_experts * expert
    mtp = f.mtp_layers * (2.0 * h * h + 3.0 * h + mtp_layer + embedding + lm_head)

    window = f.sliding_window.window_tokens if f.sliding_window else None
    num_sliding = f.sliding_window.num_sliding_layers if f.sliding_window else 0
    kv_layer, flops_layer = _kv_per_layer(f), _attention_flops_per_layer(f)

    return ModelSpec(
        id=f.id, name=f.name, mlperf_benchmark=f.mlperf_benchmark,
        mlperf_benchmark_names=tuple(f.mlperf_benchmark_names), family=f.family, attention=f.attention,
        num_layers=layers, hidden_size=h, num_heads=f.num_heads, num_kv_heads=f.num_kv_heads,
        head_dim=_head_dim(f), vocab_size=f.vocab_size, max_position_embeddings=f.max_position_embeddings,
        tie_word_embeddings=f.tie_word_embeddings, num_experts=num_experts, experts_per_token=top_k,
        num_shared_experts=f.moe.num_shared_experts if f.moe else 0, num_moe_layers=num_moe_layers,
        sliding_window_tokens=window, num_sliding_layers=num_sliding,
        kv_lora_rank=f.mla.kv_lora_rank if f.mla else None,
        total_params=total, active_params=active, embedding_params=embedding, lm_head_params=lm_head,
        dense_params=dense_params, attention_params=attention, expert_params=expert, mtp_params=mtp,
        counts_note=_counts_note(f, mtp),
        kv_elements_per_token_full=(layers - num_sliding) * kv_layer,
        kv_elements_per_token_sliding=num_sliding * kv_layer,
        gemm_flops_per_token=2.0 * (dense_params + num_moe_layers * top_k * expert),
        attention_flops_per_query_key_full=(layers - num_sliding) * flops_layer,
        attention_flops_per_query_key_sliding=num_sliding * flops_layer,
        published_total_params_b=f.published_total_params_b,
        published_active_params_b=f.published_active_params_b,
        published_active_counts_input_embedding=f.published_active_counts_input_embedding,
        source=f.source,
        non_expert_weights_min_format=f.quantisation.other_weights_format if f.quantisation else None,
        speculative=_speculative(f.speculative),
    )


def no_speculative_error(model_id: str, where: str = "") -> InputError:
    """The one-line error for speculative decoding asked of a model without a draft (``where``: the
    option it came from), naming the models that have one."""
    able = [m.id for m in list_models() if m.speculative is not None]
    return InputError(f"{where}{model_id} has no speculative decoding (no 'speculative' block in its model "
                      f"file); models with one: {', '.join(able) or 'none'}")


def _speculative(f: SpeculativeFile | None) -> Speculative | None:
    if f is None:
        return None
    return Speculative(
        method=f.method, draft_tokens=f.draft_tokens, acceptance_length_tokens=f.acceptance_length_tokens,
        draft_params=units.billions_to_count(f.draft_params_b),
        draft_active_params=units.billions_to_count(f.draft_active_params_b),
        draft_weights_format=f.draft_weights_format, mlperf_scenarios=tuple(f.mlperf_scenarios),
    )


def _counts_note(f: ModelFile, mtp_params: float) -> str:
    tied = "tied (one matrix, counted once)" if f.tie_word_embeddings else "untied (both counted)"
    parts = [f"total = input embedding + {f.num_layers} layers + final norm + lm_head; embeddings {tied}"]
    extras = [label for label, present in (
        ("attention biases", f.attention_bias), ("attention sinks", f.attention_sinks),
        ("q/k norms", f.qk_norm), ("expert biases", bool(f.moe and f.moe.expert_bias)),
        ("router biases", bool(f.moe and f.moe.router_bias))) if present]
    if extras:
        parts.append(f"includes {', '.join(extras)}")
    if f.mtp_layers:
        parts.append(f"excludes {f.mtp_layers} MTP layer(s) "
                     f"({units.millions(mtp_params):,.0f}M params in the checkpoint, not served)")
    if f.excluded_from_counts:
        parts.append(f"excludes {f.excluded_from_counts}")
    return "; ".join(parts)


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


@functools.cache  # = lru_cache(maxsize=None)
def _load_path(path: Path) -> ModelSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read model file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"model file {path}{line}: invalid YAML") from None
    if not isinstance(raw, dict):
        raise InputError(f"model file {path}: expected a mapping of fields at the top level")
    try:
        return build_spec(ModelFile.model_validate(raw))
    except ValidationError as exc:
        raise InputError(f"model file {path}: {_one_line(exc)}") from None


def load_model_file(path: str | Path) -> ModelSpec:
    """Load and validate one model YAML; raises ``InputError`` (one line) on a bad file."""
    return _load_path(Path(path).resolve())


def _models_dir() -> Path:
    return profiles_dir() / "models"


@functools.cache  # = lru_cache(maxsize=None)
def _catalog() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for path in sorted(_models_dir().glob("*.yaml")):
        spec = load_model_file(path)
        if spec.id != path.stem:
            raise InputError(f"model file {path}: id '{spec.id}' must equal the file name '{path.stem}'")
        specs[spec.id] = spec
    return specs


def model_ids() -> list[str]:
    """Ids of every model in the catalog, sorted."""
    return sorted(_catalog())


def list_models() -> list[ModelSpec]:
    """Every model in the catalog, sorted by id."""
    catalog = _catalog()
    return [catalog[i] for i in sorted(catalog)]


def load_model(name: str) -> ModelSpec:
    """The catalog model with id ``name`` (case-insensitive); unknown names raise ``InputError``."""
    catalog = _catalog()
    key = name.strip().lower()
    if key not in catalog:
        raise unknown_name("model", name, catalog)
    return catalog[key]
