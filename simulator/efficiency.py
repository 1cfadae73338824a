"""Efficiency factors of the iteration-time model, per accelerator x compute format x framework.

Each factor is a fraction of the ideal of the algorithm actually used: ``compute_frac`` of the dense
tensor-core peak, ``memory_frac`` of HBM peak bandwidth, ``network_frac`` of the collective's
bandwidth bound on its topology, plus a fixed ``step_overhead_s`` per engine step and ``seq_overhead_s``
per sequence decoding in that step (sampling, per-sequence attention work, scheduler bookkeeping: what
grows with the batch but not with bytes or FLOPs). Defaults come
from measured fractions of peak (``hardware_profiles/efficiency.yaml``); calibration against MLPerf
results writes ``hardware_profiles/calibration.yaml``, whose entries take precedence.

Invariant: every fraction lies in (0, 1] except ``nvls_network_frac``, which may exceed 1 because
an in-network reduction beats the ring bound; both overheads are >= 0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from simulator import units
from simulator.data import profiles_dir
from simulator.errors import InputError
from simulator.mlperf import slo_limits_s, version_key

FRAMEWORKS: tuple[str, ...] = ("trtllm", "vllm", "sglang")
_FRAMEWORK_ALIASES = {
    "tensorrt-llm": "trtllm",
    "tensorrt": "trtllm",
    "trt-llm": "trtllm",
    "trtllm": "trtllm",
    "vllm": "vllm",
    "sglang": "sglang",
}


@dataclass(frozen=True)
class Efficiency:
    """Fractions of ideal for one deployment (see module docstring for the invariants)."""

    compute_frac: float
    memory_frac: float
    network_frac: float
    step_overhead_s: float
    nvls_network_frac: float
    nvls_min_gpus: int
    seq_overhead_s: float = 0.0  # per sequence in the step's decode batch (sampling, per-sequence kernels)
    source: str = "defaults"

    def scaled(self, **factors: float) -> Efficiency:
        """A copy with named fields multiplied by factors (fractions clipped to (0, 1])."""
        values: dict[str, Any] = {}
        for name, factor in factors.items():
            value = getattr(self, name) * factor
            if name.endswith("_frac") and name != "nvls_network_frac":
                value = min(value, 1.0)
            values[name] = value
        return replace(self, **values)

    def scaled_by_residual(self, log_residual: float) -> Efficiency:
        """A copy as fast as a calibration residual r says: fractions times exp(r) (clipped to 1), both
        overheads divided by it (r < 0: slower than the calibrated model)."""
        factor = math.exp(log_residual)
        return self.scaled(compute_frac=factor, memory_frac=factor, network_frac=factor,
                           step_overhead_s=1.0 / factor, seq_overhead_s=1.0 / factor)


def normalise_framework(name: str) -> str:
    """Map a framework name (e.g. 'TensorRT-LLM', 'vLLM') to its family id; InputError if unknown."""
    key = name.strip().lower()
    if key not in _FRAMEWORK_ALIASES:
        raise InputError(f"unknown framework '{name}'; valid choices: {', '.join(FRAMEWORKS)}")
    return _FRAMEWORK_ALIASES[key]


def default_framework(vendor: str) -> str:
    """The framework MLPerf submitters mostly used on a vendor: TensorRT-LLM on NVIDIA, vLLM on AMD."""
    return "trtllm" if vendor == "nvidia" else "vllm"


@functools.lru_cache(maxsize=4)
def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
    return loaded or {}


def _values(section: dict[str, Any] | None) -> dict[str, float]:
    return {k: float(v["value"]) for k, v in (section or {}).items() if isinstance(v, dict)}


def calibration_path() -> Path:
    """Where fitted efficiencies live (written by ``fleetsim calibrate --write``)."""
    return profiles_dir() / "calibration.yaml"


def calibration_key(accelerator_id: str, compute_family: str, framework: str) -> str:
    """Key of one calibrated group, e.g. 'mi355x/fp4/vllm'."""
    return f"{accelerator_id}/{compute_family}/{framework}"


def lookup_efficiency(
    accelerator_id: str,
    architecture: str,
    compute_family: str,
    framework: str,
    *,
    calibration: dict[str, Any] | None = None,
) -> Efficiency:
    """Resolve the efficiency factors for one deployment.

    ``calibration`` maps group keys (see ``calibration_key``) or pooled keys (``vendor:<v>``,
    ``architecture:<a>``) to factor dicts; by default the shipped calibration file is used.
    """
    base = _load_yaml(profiles_dir() / "efficiency.yaml")
    merged = _values(base.get("default"))
    merged.update(_values(base.get("architectures", {}).get(architecture)))
    merged.update(_values(base.get("frameworks", {}).get(framework)))
    source = "defaults"
    fitted = calibration if calibration is not None else _load_yaml(calibration_path()).get("groups", {})
    for key in (f"architecture:{architecture}", calibration_key(accelerator_id, compute_family, framework)):
        if key in fitted:
            merged.update(
                {
                    k: float(v)
                    for k, v in fitted[key].get("params", fitted[key]).items()
                    if isinstance(v, (int, float))
                }
            )
            source = f"calibration {key}"
    nvls = _values(base.get("in_network_reduction"))
    return Efficiency(
        compute_frac=merged["compute_frac"],
        memory_frac=merged["memory_frac"],
        network_frac=merged["network_frac"],
        step_overhead_s=units.ms_to_s(merged["step_overhead_ms"]),
        nvls_network_frac=nvls.get("network_frac", merged["network_frac"]),
        nvls_min_gpus=int(nvls.get("min_gpus", 5)),
        seq_overhead_s=units.us_to_s(merged["seq_overhead_us"]),
        source=source,
    )


def model_log_factor(model_id: str, model_factors: dict[str, Any] | None, scenario: str | None = None,
                     version: str | None = None, simulated: bool = False) -> float:
    """Log throughput factor of a benchmark model from a calibration's ``model_factors`` (0 if none).

    Its ``scenario``'s factor when fitted (else the model's), plus the offset of MLPerf round ``version``
    and the offset of that round within the scenario (``by_scenario_version``), each by
    ``version_offset`` (``version`` None: the latest fitted round, today's software). ``simulated``: the
    throughput comes from the simulation, so the scenario's ``sim_correction`` is added too (see
    ``simulator.calibration``; the factors themselves are fitted on the fast evaluator).
    """
    entry = (model_factors or {}).get(model_id)
    if not isinstance(entry, dict):
        return 0.0
    by_scenario = entry.get("by_scenario") or {}
    base = float(by_scenario.get(scenario, entry.get("log_throughput_factor", 0.0)))
    nested = (entry.get("by_scenario_version") or {}).get(scenario) or {}
    correction = float((entry.get("sim_correction") or {}).get(scenario, 0.0)) if simulated else 0.0
    return (base + version_offset(entry.get("by_version") or {}, version) + version_offset(nested, version)
            + correction)


def mlperf_tpot_limits_s(model_id: str) -> dict[str, float]:
    """p99 TPOT limit (s) of each MLPerf latency scenario ('server', 'interactive') the rules define for
    ``model_id`` (empty for a model outside MLPerf)."""
    out = {}
    for scenario in ("server", "interactive"):
        try:
            tpot_s = slo_limits_s(model_id, scenario)[1]
        except InputError:
            continue
        if tpot_s is not None:
            out[scenario] = tpot_s
    return out


def nearest_mlperf_scenario(model_id: str, tpot_limit_s: float) -> str:
    """The MLPerf latency scenario ('server' or 'interactive') of ``model_id`` whose p99 TPOT limit is
    nearest to ``tpot_limit_s`` in ratio; 'server' when the rules define no limits for the model."""
    limits = mlperf_tpot_limits_s(model_id)
    if not limits or not tpot_limit_s > 0:
        return "server"
    return min(limits, key=lambda sc: (abs(math.log(tpot_limit_s / limits[sc])), sc != "server"))


def sizing_throughput_factor(model_id: str, tpot_limit_s: float,
                             model_factors: dict[str, Any] | None = None) -> float:
    """Throughput multiplier a sizing simulation applies: the model's Server factor at the latest round
    (``model_throughput_factor``) times exp(the simulation correction of the MLPerf scenario nearest to
    the sizing's p99 TPOT limit, ``nearest_mlperf_scenario``): the simulation's bias against the fast rule
    the factors are fitted on depends on how tight the TPOT limit is. 1.0 without factors for the model.
    ``model_factors`` None: the shipped file."""
    if model_factors is None:
        model_factors = _load_yaml(calibration_path()).get("model_factors")
    entry = (model_factors or {}).get(model_id)
    if not isinstance(entry, dict):
        return 1.0
    nearest = nearest_mlperf_scenario(model_id, tpot_limit_s)
    correction = float((entry.get("sim_correction") or {}).get(nearest, 0.0))
    return math.exp(model_log_factor(model_id, model_factors, "server", None) + correction)


def model_throughput_factor(model_id: str, model_factors: dict[str, Any] | None = None,
                            scenario: str = "server") -> float:
    """Throughput multiplier of a model: exp(``model_log_factor``) at the latest MLPerf round.

    Measured / predicted throughput of the model's MLPerf rows on all accelerators (see
    ``simulator.calibration``): what the iteration model misses for that model's kernels. The
    ``scenario``'s factor when fitted (default 'server': sizing is for latency targets; Interactive
    factors may include speculative decoding and are not used by default), else the model's, plus the
    latest MLPerf round's offsets (sizing assumes today's software). 1.0 when the model has none.
    ``model_factors`` None: the shipped file.
    """
    if model_factors is None:
        model_factors = _load_yaml(calibration_path()).get("model_factors")
    return math.exp(model_log_factor(model_id, model_factors, scenario, None))


def version_offset(by_version: dict[str, float], version: str | None) -> float:
    """A round's fitted offset; for a round not fitted, the nearest fitted round's (a newer round gets the
    latest: software does not get slower); the latest round's when ``version`` is None; 0 without any."""
    if not by_version:
        return 0.0
    if version in by_version:
        return float(by_version[version])
    ordered = sorted(by_version, key=version_key)
    if not version:
        return float(by_version[ordered[-1]])
    try:
        key = version_key(version)
    except InputError:
        return float(by_version[ordered[-1]])
    older = [v for v in ordered if version_key(v) <= key]
    return float(by_version[older[-1] if older else ordered[0]])


def memory_settings() -> dict[str, float]:
    """Memory-plan settings: reserve fraction, runtime reserve (bytes), KV block size (tokens)."""
    values = _values(_load_yaml(profiles_dir() / "efficiency.yaml").get("memory"))
    return {
        "reserve_frac": values["reserve_frac"],
        "runtime_reserve_bytes": units.gib_to_bytes(values["runtime_reserve_gib"]),
        "kv_block_tokens": int(values["kv_block_tokens"]),
    }
