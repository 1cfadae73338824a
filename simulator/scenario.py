"""Scenario files: what to size (model, workload, SLOs, target load) and where to look (hardware, formats,
layouts, packaging, costs). YAML in human units (keys carry the unit: ``tpot_p99_ms``); strict pydantic
models (unknown keys rejected, frozen); ``fleetsim schema`` prints the JSON Schema of the file format.

Loading (:func:`load_scenario`, implemented in :mod:`simulator.scenario_files`, which also holds the file
format's JSON Schema): read YAML -> expand presets into plain fields -> apply ``--set
path=value`` overrides -> validate. Presets:

- ``workload.benchmark: llama2-70b`` fills ``input_tokens``/``output_tokens`` not given explicitly with
  the MLPerf lengths (``workload.benchmark_workload``); the benchmark stays as a label.
- ``slo: {preset: mlperf-server}`` (or ``mlperf-interactive``) becomes ``ttft_p99_ms``/``tpot_p99_ms``
  from the MLPerf rules for the workload's benchmark (default: the model's); numbers given next to the
  preset win.

Token lengths (``workload.input_tokens`` / ``output_tokens``), by ``kind``: ``fixed`` (``tokens``),
``lognormal`` (``mean_tokens``, ``cv``, ``max_tokens``) and ``empirical`` (a column of an MLPerf
token file or of a CSV/Parquet ``path``, optionally capped at ``max_tokens`` and rescaled to
``mean_tokens``). ``mean_tokens`` is always the mean of the sampled lengths, caps included, so
``--set workload.output_tokens.mean_tokens=500`` means "requests generate 500 tokens on average".

Overrides: dotted paths; values are YAML scalars or flow lists (``--set layouts.tp=[1,2]``; a comma list
``--set hardware=h100,h200`` also works for name lists). Paths are checked against the schema (an
unknown key raises ``InputError`` listing the valid keys at that level); ``slo.preset`` and
``workload.benchmark`` are applied before expansion so that the preset expands again. Setting one of
two exclusive fields (``target.output_tokens_per_s`` / ``requests_per_s``, ``headroom.spare_nodes`` /
``spare_frac``) clears the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simulator.efficiency import normalise_framework
from simulator.errors import InputError, unknown_name
from simulator.formats import NAMED_PRECISIONS
from simulator.hardware import accelerator_ids
from simulator.metrics import Slo
from simulator.models import load_model
from simulator.router import ROUTERS
from simulator.units import ms_to_s
from simulator.workload import (
    EmpiricalLength,
    FixedLength,
    GammaArrivals,
    LengthModel,
    PoissonArrivals,
    Workload,
    canonical_benchmark,
    lognormal_for_capped_mean,
)

_CONFIG = ConfigDict(extra="forbid", frozen=True)
SLO_PRESETS: dict[str, str] = {"mlperf-server": "server", "mlperf-interactive": "interactive"}
FORMATS_AUTO = "auto"
MIN_DURATION_S = 5.0
_PRESET_PATHS = (("slo", "preset"), ("workload", "benchmark"))
_EXCLUSIVE = {
    ("target", "output_tokens_per_s"): "requests_per_s",
    ("target", "requests_per_s"): "output_tokens_per_s",
    ("headroom", "spare_nodes"): "spare_frac",
    ("headroom", "spare_frac"): "spare_nodes",
}


class _Strict(BaseModel):
    model_config = _CONFIG


def _names(value: Any) -> Any:
    """'a,b' -> ['a', 'b']; a bare name -> [name]; lists pass through."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _ints(value: Any) -> Any:
    return [value] if isinstance(value, int) else _names(value)


def _check_hardware(ids: Any) -> None:
    valid = accelerator_ids()
    for name in ids:
        if name not in valid:
            raise unknown_name("hardware", name, valid)


# --------------------------------------------------------------------------------------------- workload
class PoissonShape(_Strict):
    """Poisson arrivals (MLPerf Server); the rate comes from the target and the search."""

    kind: Literal["poisson"] = "poisson"


class GammaShape(_Strict):
    """Renewal arrivals with gamma gaps of coefficient of variation ``cv`` (bursty when cv > 1)."""

    kind: Literal["gamma"]
    cv: float = Field(gt=0, description="coefficient of variation of the inter-arrival gaps")


class FixedTokens(_Strict):
    """Every request carries exactly ``tokens`` tokens."""

    kind: Literal["fixed"]
    tokens: int = Field(ge=1)


class LognormalTokens(_Strict):
    """Lognormal lengths capped at ``max_tokens``; ``mean_tokens`` is the mean after capping."""

    kind: Literal["lognormal"]
    mean_tokens: float = Field(ge=1, description="mean of the sampled (capped) lengths, tokens")
    cv: float = Field(gt=0, description="coefficient of variation before capping")
    max_tokens: int = Field(ge=2)

    @model_validator(mode="after")
    def _check(self) -> LognormalTokens:
        if self.mean_tokens >= self.max_tokens:
            raise ValueError(f"mean_tokens ({self.mean_tokens}) must be below max_tokens ({self.max_tokens})")
        return self


class EmpiricalTokens(_Strict):
    """Resample a column of a token-length file, capped at ``max_tokens`` and rescaled so the sampled
    mean is ``mean_tokens`` (omitted: the file's own values)."""

    kind: Literal["empirical"]
    benchmark: str | None = Field(default=None, description="MLPerf token file of this benchmark")
    path: str | None = Field(default=None, description="CSV/Parquet with input_length/output_length")
    column: Literal["input_length", "output_length"]
    mean_tokens: float | None = Field(default=None, ge=1, description="rescale to this sampled mean, tokens")
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> EmpiricalTokens:
        if (self.benchmark is None) == (self.path is None):
            raise ValueError("give exactly one of benchmark or path")
        if (
            self.mean_tokens is not None
            and self.max_tokens is not None
            and self.mean_tokens >= self.max_tokens
        ):
            raise ValueError(f"mean_tokens ({self.mean_tokens}) must be below max_tokens ({self.max_tokens})")
        return self


TokenSpec = Annotated[FixedTokens | LognormalTokens | EmpiricalTokens, Field(discriminator="kind")]
ArrivalShape = Annotated[PoissonShape | GammaShape, Field(discriminator="kind")]


def length_distribution(spec: FixedTokens | LognormalTokens | EmpiricalTokens) -> Any:
    """The ``workload`` length distribution a token spec describes (see the module docstring)."""
    if isinstance(spec, FixedTokens):
        return FixedLength(tokens=spec.tokens)
    if isinstance(spec, LognormalTokens):
        return lognormal_for_capped_mean(spec.mean_tokens, spec.cv, spec.max_tokens)
    base = EmpiricalLength(
        benchmark=spec.benchmark, path=spec.path, column=spec.column, max_tokens=spec.max_tokens
    )
    if spec.mean_tokens is None:
        return base
    raw = EmpiricalLength(benchmark=spec.benchmark, path=spec.path, column=spec.column)
    scale = _scale_for_mean(raw.source_file(), spec.column, spec.mean_tokens, spec.max_tokens)
    return base.model_copy(update={"scale": scale})


@lru_cache(maxsize=64)
def _scale_for_mean(source: str, column: str, mean_tokens: float, max_tokens: int | None) -> float:
    """Scale s with mean(clip(rint(s * values), 1, max_tokens)) ~= mean_tokens (bisection)."""
    values = EmpiricalLength(path=source, column=column).values().astype(np.float64)
    top = math.inf if max_tokens is None else max_tokens

    def mean_at(scale: float) -> float:
        return float(np.clip(np.rint(values * scale), 1, top).mean())

    lo, hi = 0.0, 1.0
    while mean_at(hi) < mean_tokens:
        lo, hi = hi, hi * 2.0
        if hi > values.size * mean_tokens:
            raise InputError(f"cannot rescale {column} of {source} to a mean of {mean_tokens} tokens")
    for _ in range(60):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if mean_at(mid) < mean_tokens else (lo, mid)
    return hi


class WorkloadSpec(_Strict):
    """Arrivals and token lengths; ``benchmark`` (after expansion) only labels the workload."""

    benchmark: str | None = Field(default=None, description="MLPerf benchmark preset for the lengths")
    arrivals: ArrivalShape = Field(default_factory=PoissonShape)
    input_tokens: TokenSpec
    output_tokens: TokenSpec

    @field_validator("benchmark")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        return None if value is None else canonical_benchmark(value)

    def length_model(self) -> LengthModel:
        """Input and output distributions (paired rows when both resample one file)."""
        return LengthModel(
            input_tokens=length_distribution(self.input_tokens),
            output_tokens=length_distribution(self.output_tokens),
        )

    def at_rate(self, rate_per_s: float) -> Workload:
        """The simulator workload at ``rate_per_s`` requests/s."""
        lengths = self.length_model()
        if isinstance(self.arrivals, GammaShape):
            arrivals: Any = GammaArrivals(rate_per_s=rate_per_s, cv=self.arrivals.cv)
        else:
            arrivals = PoissonArrivals(rate_per_s=rate_per_s)
        return Workload(
            arrivals=arrivals, input_tokens=lengths.input_tokens, output_tokens=lengths.output_tokens
        )


# --------------------------------------------------------------------------------------------- the rest
class SloSpec(_Strict):
    """p99 limits per request (MLPerf applies them to the p99 of TTFT and of TPOT), ms."""

    ttft_p99_ms: float = Field(gt=0)
    tpot_p99_ms: float = Field(gt=0)
    source: str | None = Field(default=None, description="where the limits come from (set by presets)")

    def to_slo(self) -> Slo:
        """In seconds."""
        return Slo(ttft_p99_s=ms_to_s(self.ttft_p99_ms), tpot_p99_s=ms_to_s(self.tpot_p99_ms))


class TargetSpec(_Strict):
    """The load the fleet must carry within the SLOs: output tokens/s or requests/s (exactly one)."""

    output_tokens_per_s: float | None = Field(default=None, gt=0)
    requests_per_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> TargetSpec:
        if (self.output_tokens_per_s is None) == (self.requests_per_s is None):
            raise ValueError("give exactly one of output_tokens_per_s and requests_per_s")
        return self


class LayoutSpec(_Strict):
    """Parallel layouts searched: the cross product of the lists (``ep`` > tp*pp combinations skipped;
    ``speculative`` true on a model without a draft is skipped when false is listed too, else an error).
    ``replicas_per_node``, when given, keeps only layouts packing exactly that many replicas per node."""

    tp: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    pp: list[int] = Field(default_factory=lambda: [1], min_length=1)
    ep: list[int] = Field(default_factory=lambda: [1], min_length=1)
    attention: list[Literal["tp", "dp"]] = Field(default_factory=lambda: ["tp"], min_length=1)
    speculative: list[bool] = Field(
        default_factory=lambda: [False], min_length=1,
        description="with / without speculative decoding (the model file's draft); [false, true] tries both",
    )
    replicas_per_node: list[int] | None = None

    _as_lists = field_validator("tp", "pp", "ep", "attention", "replicas_per_node", mode="before")(
        classmethod(lambda cls, v: _ints(v))
    )
    _bools = field_validator("speculative", mode="before")(
        classmethod(lambda cls, v: [v] if isinstance(v, bool) else v)
    )

    @field_validator("tp", "pp", "ep", "replicas_per_node")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(v < 1 for v in value):
            raise ValueError(f"every entry must be >= 1, got {value}")
        return value


PerHardwareInt = Annotated[int, Field(ge=1)] | dict[str, Annotated[int, Field(ge=1)]]


class PackagingSpec(_Strict):
    """How replicas become nodes and racks; each per-node/rack figure is one number for every hardware or
    a mapping hardware id -> number (missing: the profile's figure; racks: one scale-up domain for
    rack-scale systems, else ``DEFAULT_NODES_PER_RACK`` nodes). Limits apply to the provisioned fleet."""

    gpus_per_node: PerHardwareInt | None = None
    nodes_per_rack: PerHardwareInt | None = None
    scale_up_domain_gpus: PerHardwareInt | None = None
    max_gpus: int | None = Field(
        default=None, ge=1, description="limit on provisioned GPUs (spares included)"
    )
    max_racks: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _known(self) -> PackagingSpec:
        for value in (self.gpus_per_node, self.nodes_per_rack, self.scale_up_domain_gpus):
            if isinstance(value, dict):
                _check_hardware(value)
        return self


class CostSpec(_Strict):
    """Costs: $/GPU-hour (one price, or hardware id -> price; missing = the profile's
    ``price_usd_per_gpu_hour``), energy at ``usd_per_kwh`` of facility power, and the PUE."""

    usd_per_gpu_hour: Annotated[float, Field(ge=0)] | dict[str, Annotated[float, Field(ge=0)]] | None = None
    usd_per_kwh: float | None = Field(default=None, ge=0)
    pue: float = Field(default=1.0, ge=1.0, description="facility power / IT power")

    @model_validator(mode="after")
    def _known(self) -> CostSpec:
        if isinstance(self.usd_per_gpu_hour, dict):
            _check_hardware(self.usd_per_gpu_hour)
        return self


class HeadroomSpec(_Strict):
    """Spare nodes on top of the sized fleet: a count, or a fraction of the serving nodes (rounded up)."""

    spare_nodes: int | None = Field(default=None, ge=0)
    spare_frac: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _one(self) -> HeadroomSpec:
        if self.spare_nodes is not None and self.spare_frac is not None:
            raise ValueError("give either spare_nodes or spare_frac, not both")
        return self


class EngineSpec(_Strict):
    """Serving-engine settings of every replica (framework default: TensorRT-LLM on NVIDIA, vLLM on AMD).
    ``max_num_seqs`` is per scheduler: an attention-DP replica has one per rank (``Layout.schedulers``)."""

    framework: str | None = None
    kv_precision: str | None = None
    max_num_seqs: int = Field(default=1024, ge=1)
    max_batched_tokens: int = Field(default=8192, ge=1)

    @field_validator("framework")
    @classmethod
    def _framework(cls, value: str | None) -> str | None:
        return None if value is None else normalise_framework(value)


class SimulationSpec(_Strict):
    """Search controls. ``duration_s`` / ``verify_duration_s``: minimum simulated seconds of one-replica /
    whole-fleet runs (runs are lengthened to cover their warm-up plus a window of several mean request
    latencies); ``fidelity`` in (0, 1] scales both minimums (floor 5 s) for quick, rougher answers (the
    latency-based lengths stay: tests use small fidelities with short requests).
    ``rel_tol``: relative precision of the one-replica rate search. ``verify``: ``all`` candidates get
    whole-fleet simulations, or only the ``competitive`` ones (estimate within ``verify_margin_frac`` of
    the best estimate, in GPUs or $/hour), or ``none`` (estimates only). Unverified rows say so."""

    duration_s: float = Field(default=120.0, gt=0)
    verify_duration_s: float = Field(default=60.0, gt=0)
    seed: int = Field(default=0, ge=0)
    router: str = "least-outstanding"
    rel_tol: float = Field(default=0.02, gt=0, lt=0.5)
    fidelity: float = Field(default=1.0, gt=0, le=1)
    verify: Literal["all", "competitive", "none"] = Field(
        default="competitive", description="which candidates get whole-fleet simulations (see planner)"
    )
    verify_margin_frac: float = Field(
        default=0.25, ge=0, description="'competitive': within this of the best"
    )
    workers: int = Field(
        default=0, ge=0, description="processes sizing candidates in parallel (0: one per CPU)"
    )

    @field_validator("router")
    @classmethod
    def _router(cls, value: str) -> str:
        if value not in ROUTERS:
            raise unknown_name("router", value, ROUTERS)
        return value

    @property
    def search_duration_s(self) -> float:
        """Simulated seconds of a one-replica run at this fidelity."""
        return max(self.duration_s * self.fidelity, MIN_DURATION_S)

    @property
    def fleet_duration_s(self) -> float:
        """Simulated seconds of a whole-fleet run at this fidelity."""
        return max(self.verify_duration_s * self.fidelity, MIN_DURATION_S)


class Scenario(_Strict):
    """A sizing question: each hardware x format x layout candidate is sized for ``target`` within ``slo``."""

    name: str | None = None
    description: str | None = None
    model: str
    workload: WorkloadSpec
    slo: SloSpec
    target: TargetSpec
    hardware: list[str] = Field(min_length=1)
    formats: list[str] | Literal["auto"] = Field(
        default=FORMATS_AUTO,
        description="named precisions, or 'auto': fp4 where the hardware has it, else fp8",
    )
    baseline: str | None = Field(
        default=None, description="hardware that `compare` divides by (default: first)"
    )
    layouts: LayoutSpec = Field(default_factory=LayoutSpec)
    packaging: PackagingSpec = Field(default_factory=PackagingSpec)
    costs: CostSpec | None = None
    headroom: HeadroomSpec = Field(default_factory=HeadroomSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    simulation: SimulationSpec = Field(default_factory=SimulationSpec)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return load_model(value).id

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware_list(cls, value: Any) -> Any:
        return _names(value)

    @field_validator("hardware")
    @classmethod
    def _hardware(cls, value: list[str]) -> list[str]:
        ids = list(dict.fromkeys(v.strip().lower() for v in value))
        _check_hardware(ids)
        return ids

    @field_validator("formats", mode="before")
    @classmethod
    def _formats_list(cls, value: Any) -> Any:
        return value if value == FORMATS_AUTO else _names(value)

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: list[str] | str) -> list[str] | str:
        if value == FORMATS_AUTO:
            return value
        for name in value:
            if name.lower() not in NAMED_PRECISIONS:
                raise unknown_name("precision", name, [*NAMED_PRECISIONS, FORMATS_AUTO])
        return list(dict.fromkeys(v.lower() for v in value))

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, value: str | None) -> str | None:
        if value is not None:
            _check_hardware([value.lower()])
        return None if value is None else value.lower()

    def target_rate_per_s(self) -> float:
        """The target as requests/s (output tokens/s divided by the mean output length)."""
        if self.target.requests_per_s is not None:
            return self.target.requests_per_s
        return self.target.output_tokens_per_s / self.workload.length_model().mean_output_tokens

    def target_output_tokens_per_s(self) -> float:
        """The target as output tokens/s."""
        if self.target.output_tokens_per_s is not None:
            return self.target.output_tokens_per_s
        return self.target.requests_per_s * self.workload.length_model().mean_output_tokens


def load_scenario(source: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Load a scenario file (a path, or a shipped scenario's name) with ``--set``-style overrides.

    See :mod:`simulator.scenario_files` (YAML, presets, overrides); raises ``InputError`` (one line).
    """
    from simulator.scenario_files import load_scenario as load

    return load(source, overrides)
