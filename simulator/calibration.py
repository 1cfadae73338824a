"""Fit the efficiency factors of the iteration-time model to measured MLPerf results.

Parameters (per group = accelerator x GEMM compute family x framework family, key
``efficiency.calibration_key``): ``compute_frac``, ``memory_frac``, ``step_overhead_ms``, ``seq_overhead_us``
(per decoding sequence per step); ``network_frac``
is pooled per vendor. They are fitted as log multipliers ``delta`` on the uncalibrated defaults
(``efficiency.yaml``), in a hierarchy that pools sparse groups:

    vendor (all its rows; delta ~ N(0, SIGMA_VENDOR^2) toward the defaults; also fits network)
      -> architecture (``architecture:<arch>``; delta ~ N(vendor delta, SIGMA_ARCH^2))
        -> group (delta ~ N(architecture delta, SIGMA_GROUP^2))

Each level minimises sum(log residual^2) / RESIDUAL_SIGMA^2 + prior penalty (a MAP fit, so a group
with few rows stays near its pool: shrinkage). The residual is log(measured / predicted) with the
``replay`` fast steady-state evaluator (the same ``StepModel`` the simulation uses). Optimiser: a
bounded Nelder-Mead written here (numpy only). Fractions are clipped to [FRAC_MIN, 1] and the overheads
to [0, OVERHEAD_MAX_MS] and [0, SEQ_OVERHEAD_MAX_US], so every fitted efficiency is physical.

An architecture without rows inherits its vendor's multipliers (applied to its own defaults).

Model factors (``model_factors``, top level, NOT efficiencies; ``use_model_factors=False`` disables): after
the architecture level, one log throughput multiplier per benchmark model = the shrunk mean residual of its
rows (prior N(0, SIGMA_MODEL^2)). It stands for what the iteration model misses for that model's kernels
(MoE grouped GEMMs at small per-expert batches, MLA, attention sinks, sampling) and applies to every
accelerator alike; a model absent from the training rows gets none. Each model also gets a shrunk offset per
scenario, per MLPerf round (software), and per round within a scenario. ``replay.predict`` multiplies the
predicted throughput by exp(factor); sizing does the same (``candidates.SimulationEvaluator``: a replica
carrying a real rate is simulated at rate / exp(factor), and its tokens/s multiplied back), so sizing uses
exactly the transformation that validation measures. A kernel-time scale instead (tried) inflates the fixed
per-step cost under a TPOT limit: gpt-oss-120b on MI355X sized at 4.3k tok/s/GPU against the ~10k MLPerf
measured.
Simulation correction (``simulation_bridge=True``; ``sim_correction`` in each model's factors): the factors
above are fitted on the fast evaluator, but validation and sizing run the simulation, which departs from the
fast rule by a few percent in most (model, scenario) pairs and by ~16% where it is known to be biased
(llama2-70b Interactive: Poisson prompt arrivals make some steps compute-bound and the step is convex in its
prefill, a Jensen gap the mean-step rule cannot see). For each model and scenario, a systematic
sample of ``BRIDGE_CONFIGS`` of the training rows (``bridge_specs``) is simulated and the median
log(fast / simulated) is stored; ``replay.predict`` in full mode and sizing
(``efficiency.sizing_throughput_factor``) add it, the fast evaluator does not. Measured on training rows only
(a CV fold measures its own), never on a held-out row.
Output (``fit``): {"groups": {key: {"params", "n_rows", "residuals", "provenance"}}, "model_factors": {model:
{..., "residuals"}}, "meta": {...}} -- the layout ``efficiency.lookup_efficiency`` reads from
``hardware_profiles/calibration.yaml``; the residuals (log measured / predicted of the final fit, per group
and per model) and, with the simulation correction, ``meta.forecast`` (``forecast_residuals``: how far fits
on older rounds missed newer rounds) set the sizing intervals (``uncertainty``) and validation's p05-p95.
"""

from __future__ import annotations

import functools
import hashlib
import math
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simulator import mlperf, replay, units
from simulator.data import profiles_dir
from simulator.efficiency import (
    Efficiency,
    calibration_key,
    calibration_path,
    lookup_efficiency,
    model_log_factor,
)
from simulator.errors import InputError
from simulator.hardware import load_accelerator

FRAC_MIN = 0.05
OVERHEAD_MAX_MS = 30.0
RESIDUAL_SIGMA = 0.15
SIGMA_VENDOR, SIGMA_ARCH, SIGMA_GROUP = 0.5, 0.25, 0.15
SIGMA_MODEL = 0.5           # prior spread of a per-model throughput factor (log)
SIGMA_SCENARIO = 0.3        # prior spread of a scenario's factor around its model's (log)
SIGMA_VERSION = 0.3         # prior spread of a round's (software) offset (log)
MIN_GROUP_ROWS = 4          # fewer rows: the group gets no entry of its own (its pool answers)
BRIDGE_CONFIGS = 5          # rows sampled per (model, scenario) for the simulation correction
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_PARAMS = ("compute_frac", "memory_frac", "step_overhead_ms", "seq_overhead_us")
SEQ_OVERHEAD_MAX_US = 200.0  # per decoding sequence per step: 10x the prior centre (efficiency.yaml)


# ------------------------------------------------------------------------------------------ rows

def fit_rows(rows: Sequence[mlperf.ResultRow]) -> list[tuple[mlperf.ResultRow, mlperf.ReplaySpec, list[str]]]:
    """Rows usable for fitting: supported, measured > 0; each with its spec and its parts' group keys."""
    out = []
    for row in rows:
        spec = mlperf.replay_spec(row)
        if isinstance(spec, mlperf.Unsupported) or not row.measured or row.measured <= 0:
            continue
        keys = []
        for key, _ in replay.part_keys(spec):
            cands = replay.candidates(key)
            if not cands:
                break
            keys.append(calibration_key(key.accelerator_id, cands[0][0].compute_family, key.framework))
        else:
            out.append((row, spec, keys))
    return out


def _vendor(acc_id: str) -> str:
    return load_accelerator(acc_id).vendor


def _arch(acc_id: str) -> str:
    return load_accelerator(acc_id).architecture


@functools.lru_cache(maxsize=1)
def _all_architectures() -> dict[str, str]:
    """architecture -> (vendor, a representative accelerator id) for every accelerator profile."""
    out: dict[str, str] = {}
    for path in sorted((profiles_dir() / "accelerators").glob("*.yaml")):
        acc = load_accelerator(path.stem)
        out.setdefault(acc.architecture, acc.id)
    return out


# ------------------------------------------------------------------------------------ parameters

@functools.lru_cache(maxsize=256)
def _defaults(acc_id: str, family: str, framework: str) -> Efficiency:
    """The uncalibrated efficiency of a group (``efficiency.yaml``), which every fit step starts from."""
    acc = load_accelerator(acc_id)
    return lookup_efficiency(acc_id, acc.architecture, family, framework, calibration={})


def _apply(base: Efficiency, delta: np.ndarray, network_delta: float) -> dict[str, float]:
    """Absolute, clipped parameters from log multipliers (compute, memory, overhead) and network."""
    return {
        "compute_frac": float(np.clip(base.compute_frac * math.exp(delta[0]), FRAC_MIN, 1.0)),
        "memory_frac": float(np.clip(base.memory_frac * math.exp(delta[1]), FRAC_MIN, 1.0)),
        "network_frac": float(np.clip(base.network_frac * math.exp(network_delta), FRAC_MIN, 1.0)),
        "step_overhead_ms": float(np.clip(units.s_to_ms(base.step_overhead_s) * math.exp(delta[2]), 0.0,
                                          OVERHEAD_MAX_MS)),
        "seq_overhead_us": float(np.clip(units.s_to_us(base.seq_overhead_s) * math.exp(delta[3]), 0.0,
                                         SEQ_OVERHEAD_MAX_US)),
    }


class _State:
    """Current multipliers of every level; builds the calibration dict replay reads."""

    def __init__(self) -> None:
        self.vendor: dict[str, np.ndarray] = {}     # (c, m, o, network)
        self.arch: dict[str, np.ndarray] = {}       # (c, m, o)
        self.group: dict[str, np.ndarray] = {}
        self.model_factors: dict[str, Any] = {}

    def vendor_delta(self, vendor: str) -> np.ndarray:
        return self.vendor.get(vendor, np.zeros(len(_PARAMS) + 1))

    def arch_delta(self, arch: str, vendor: str) -> np.ndarray:
        return self.arch.get(arch, self.vendor_delta(vendor)[:len(_PARAMS)])

    def calibration(self) -> dict[str, Any]:
        cal: dict[str, Any] = {}
        for arch, acc_id in _all_architectures().items():
            acc = load_accelerator(acc_id)
            fw = "trtllm" if acc.vendor == "nvidia" else "vllm"
            base = _defaults(acc_id, acc.supported_compute_formats[0], fw)
            cal[f"architecture:{arch}"] = {"params": _apply(base, self.arch_delta(arch, acc.vendor),
                                                            self.vendor_delta(acc.vendor)[-1])}
        for key, delta in self.group.items():
            acc_id, family, fw = key.split("/")
            base = _defaults(acc_id, family, fw)
            cal[key] = {"params": _apply(base, delta, self.vendor_delta(_vendor(acc_id))[-1])}
        return cal


# ------------------------------------------------------------------------------------- optimiser

def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, step: float = 0.15, iters: int = 80,
                tol: float = 1e-3) -> np.ndarray:
    """Minimise ``f`` from ``x0`` (standard reflection/expansion/contraction/shrink; unbounded)."""
    n = len(x0)
    simplex = [x0.astype(float)] + [x0 + step * np.eye(n)[i] for i in range(n)]
    values = [f(x) for x in simplex]
    for _ in range(iters):
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if abs(values[-1] - values[0]) < tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        reflected = centroid + (centroid - simplex[-1])
        fr = f(reflected)
        if fr < values[0]:
            expanded = centroid + 2.0 * (centroid - simplex[-1])
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                simplex = [simplex[0] + 0.5 * (x - simplex[0]) for x in simplex]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    return simplex[int(np.argmin(values))]


def log_residuals(items: Sequence[tuple[mlperf.ResultRow, mlperf.ReplaySpec, list[str]]],
                  calibration: dict[str, Any], model_factors: dict[str, Any] | None = None) -> np.ndarray:
    """log(measured / predicted) per row with the fast evaluator (a large value if nothing fits)."""
    factors = model_factors or {}
    cache: dict[tuple, float] = {}
    out = []
    for row, spec, _ in items:
        total = 0.0
        for key, count in replay.part_keys(spec):
            if (key, count) not in cache:
                part = replay.predict_part(key, count, calibration, mode="fast")
                cache[key, count] = part.get("tokens_per_s", 0.0)
            total += cache[key, count]
        total *= math.exp(model_log_factor(spec.model_id, factors, spec.scenario, spec.version))
        out.append(math.log(row.measured / total) if total > 0 else 3.0)
    return np.asarray(out)


def _fit_level(items: list, state: _State, setter: Callable[[np.ndarray], None], x0: np.ndarray,
               prior: np.ndarray, sigma: float) -> np.ndarray:
    weight = (RESIDUAL_SIGMA / sigma) ** 2

    def loss(x: np.ndarray) -> float:
        setter(x)
        r = log_residuals(items, state.calibration(), state.model_factors)
        return float(np.sum(r * r) + weight * np.sum((x - prior) ** 2))

    best = nelder_mead(loss, x0)
    setter(best)
    return best


def _shrunk_mean(values: Sequence[float], k: float) -> float:
    """Posterior mean of a N(0, prior) offset from ``values`` with noise/prior variance ratio ``k``."""
    return sum(values) / (len(values) + k)


def _fit_model_factors(items: list, state: _State) -> None:
    """Per benchmark model: shrunk mean log residual after the architecture level (prior N(0, SIGMA_MODEL^2));
    per scenario of it, the shrunk mean around the model's (prior N(model, SIGMA_SCENARIO^2)); then per
    MLPerf round, the shrunk mean of what is left (prior N(0, SIGMA_VERSION^2)): the software of a round;
    then per (scenario, round), the same for what is still left (see ``_scenario_round_offsets``).
    See the module docstring."""
    residuals = log_residuals(items, state.calibration(), {})
    k_model, k_scen = (RESIDUAL_SIGMA / SIGMA_MODEL) ** 2, (RESIDUAL_SIGMA / SIGMA_SCENARIO) ** 2
    k_version = (RESIDUAL_SIGMA / SIGMA_VERSION) ** 2
    state.model_factors = {}
    for model in sorted({spec.model_id for _, spec, _ in items}):
        mine = [(spec, float(r)) for (_, spec, _), r in zip(items, residuals, strict=True)
                if spec.model_id == model]
        f_model = _shrunk_mean([r for _, r in mine], k_model)
        by_scenario = {}
        for sc in sorted({spec.scenario for spec, _ in mine}):
            by_scenario[sc] = f_model + _shrunk_mean([r - f_model for spec, r in mine if spec.scenario == sc],
                                                     k_scen)
        by_version = {}
        for v in sorted({spec.version for spec, _ in mine}, key=mlperf.version_key):
            rs = [r - by_scenario[spec.scenario] for spec, r in mine if spec.version == v]
            by_version[v] = round(_shrunk_mean(rs, k_version), 4)
        state.model_factors[model] = {
            "log_throughput_factor": round(f_model, 4), "n_rows": len(mine),
            "by_scenario": {sc: round(v, 4) for sc, v in by_scenario.items()}, "by_version": by_version,
            "by_scenario_version": _scenario_round_offsets(mine, by_scenario, by_version, k_version)}


def _scenario_round_offsets(mine: list[tuple[mlperf.ReplaySpec, float]], by_scenario: dict[str, float],
                            by_version: dict[str, float], k_version: float) -> dict[str, dict[str, float]]:
    """Per scenario and MLPerf round: the shrunk mean log residual left after the scenario factor and the
    round offset (prior N(0, SIGMA_VERSION^2)): software that improved one scenario more than another in a
    round (DeepSeek-R1 v6.0 Server gained more than Offline)."""
    out: dict[str, dict[str, float]] = {}
    for sc in sorted(by_scenario):
        for v in sorted({spec.version for spec, _ in mine if spec.scenario == sc}, key=mlperf.version_key):
            rs = [r - by_scenario[sc] - by_version[v] for spec, r in mine
                  if (spec.scenario, spec.version) == (sc, v)]
            out.setdefault(sc, {})[v] = round(_shrunk_mean(rs, k_version), 4)
    return out


def _config(spec: mlperf.ReplaySpec) -> str:
    """The configuration of a single-part row (its part key and GPU count): rows sharing it predict alike."""
    return str(replay.part_keys(spec)[0])


def bridge_specs(items: Sequence[tuple[mlperf.ResultRow, mlperf.ReplaySpec, list[str]]]
                 ) -> dict[tuple[str, str], list[mlperf.ReplaySpec]]:
    """Per (model, scenario): a systematic sample of ``BRIDGE_CONFIGS`` of its single-part rows (sorted by
    configuration, the rows at the centres of equal shares), so a configuration is picked as often as its
    share of the rows: the median over the picks estimates the median over the rows."""
    rows: dict[tuple[str, str], list[tuple[str, mlperf.ReplaySpec]]] = {}
    for row, spec, _ in items:
        if len(replay.part_keys(spec)) == 1:
            rows.setdefault((spec.model_id, spec.scenario), []).append(
                (f"{_config(spec)}|{row.version}|{row.system_name}", spec))
    out = {}
    for pair, its in sorted(rows.items()):
        its.sort(key=lambda it: it[0])
        n, k = len(its), min(BRIDGE_CONFIGS, len(its))
        out[pair] = [its[int((i + 0.5) * n / k)][1] for i in range(k)]
    return out


def _log_fast_over_simulated(spec: mlperf.ReplaySpec, calibration: dict[str, Any]) -> float | None:
    """log(fast / simulated) throughput of one replayed row (None when it cannot be predicted)."""
    pred = replay.predict(spec, calibration, mode="full", model_factors={})
    if "unsupported" in pred or not pred["predicted"] > 0:
        return None
    return math.log(pred["predicted_fast"] / pred["predicted"])


def _fit_simulation_correction(items: list, state: _State, jobs: int) -> None:
    """``sim_correction`` per model and scenario: the median ``_log_fast_over_simulated`` over
    ``bridge_specs`` (see the module docstring)."""
    picks = bridge_specs(items)
    configs = {_config(spec): spec for specs in picks.values() for spec in specs}
    cal = state.calibration()
    if jobs > 1 and len(configs) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            logs = list(pool.map(_log_fast_over_simulated, configs.values(), [cal] * len(configs)))
    else:
        logs = [_log_fast_over_simulated(spec, cal) for spec in configs.values()]
    by_config = dict(zip(configs, logs, strict=True))
    for (model, scenario), specs in picks.items():
        mine = [v for spec in specs if (v := by_config[_config(spec)]) is not None]
        if mine and model in state.model_factors:
            state.model_factors[model].setdefault("sim_correction", {})[scenario] = round(
                statistics.median(mine), 4)


def fit(rows: Sequence[mlperf.ResultRow], source: str = "", log: Callable[[str], None] | None = None,
        use_model_factors: bool = True, simulation_bridge: bool = False, jobs: int = 1) -> dict:
    """Fit the hierarchy on ``rows`` (deduplicated inside) and return the calibration document.

    ``simulation_bridge``: also measure the simulation's correction per model and scenario (simulates
    ``BRIDGE_CONFIGS`` configurations of each, in ``jobs`` processes; needs the model factors)."""
    items = fit_rows(mlperf.deduplicate(rows))
    if not items:
        raise InputError("no usable rows to calibrate on (need supported rows with a measured result)")
    state = _State()
    say = log or (lambda _msg: None)
    by_vendor: dict[str, list] = {}
    for it in items:
        by_vendor.setdefault(_vendor(it[1].accelerator_id), []).append(it)
    for vendor, its in sorted(by_vendor.items()):
        def set_vendor(x: np.ndarray, v: str = vendor) -> None:
            state.vendor[v] = x
        _fit_level(its, state, set_vendor, np.zeros(len(_PARAMS) + 1), np.zeros(len(_PARAMS) + 1),
                   SIGMA_VENDOR)
        say(f"vendor {vendor}: {len(its)} rows")
    by_arch: dict[str, list] = {}
    for it in items:
        by_arch.setdefault(_arch(it[1].accelerator_id), []).append(it)
    for arch, its in sorted(by_arch.items()):
        vendor = _vendor(its[0][1].accelerator_id)
        prior = state.vendor_delta(vendor)[:len(_PARAMS)].copy()

        def set_arch(x: np.ndarray, a: str = arch) -> None:
            state.arch[a] = x
        _fit_level(its, state, set_arch, prior.copy(), prior, SIGMA_ARCH)
        say(f"architecture {arch}: {len(its)} rows")
    if use_model_factors:
        _fit_model_factors(items, state)
        say(f"model factors: {state.model_factors}")
    by_group: dict[str, list] = {}
    for it in items:
        for key in set(it[2]):
            by_group.setdefault(key, []).append(it)
    for key, its in sorted(by_group.items()):
        if len(its) < MIN_GROUP_ROWS:
            continue
        acc_id = key.split("/")[0]
        prior = state.arch_delta(_arch(acc_id), _vendor(acc_id)).copy()

        def set_group(x: np.ndarray, k: str = key) -> None:
            state.group[k] = x
        _fit_level(its, state, set_group, prior.copy(), prior, SIGMA_GROUP)
        say(f"group {key}: {len(its)} rows")
    if use_model_factors and simulation_bridge:
        _fit_simulation_correction(items, state, jobs)
        say("simulation correction: " + ", ".join(f"{m} {v.get('sim_correction')}"
                                                  for m, v in state.model_factors.items()))
    doc = _document(items, state, by_arch, by_group, source)
    if use_model_factors and simulation_bridge:
        forecast = doc["meta"]["forecast"] = forecast_residuals(rows)
        say("forecast residuals: " + ", ".join(f"{k} {v['n_rows']} rows" for k, v in forecast.items()
                                               if isinstance(v, dict)))
    return doc


FORECAST_KINDS = ("new_hardware", "new_model", "known")


def forecast_residuals(rows: Sequence[mlperf.ResultRow]) -> dict[str, Any]:
    """How far this calibration misses a round it has not seen, by what was new in it.

    For each MLPerf round but the oldest: fit (fast evaluator, model factors, no simulation correction) on
    the strictly older rounds and take the log residuals of that round's rows; a row is ``new_hardware`` when
    its calibration group has no entry of its own in that fit (fewer than ``MIN_GROUP_ROWS`` older rows:
    the architecture pool answers, as it does for sizing), else ``new_model`` when its benchmark model had
    no older rows, else ``known``. Returns {kind: residual statistics with ``n_rows``} for the kinds with
    rows, plus "method". ``uncertainty.residual_bounds`` widens the interval of a deployment whose group
    or model the calibration never saw with these quantiles.
    """
    items = fit_rows(mlperf.deduplicate(rows))
    by_kind: dict[str, list[float]] = {k: [] for k in FORECAST_KINDS}
    for _, train, test in mlperf.cv_splits_by_version([it[0] for it in items]):
        try:
            doc = fit([items[i][0] for i in train], source="forecast fold")
        except InputError:
            continue
        tested = [items[i] for i in test]
        for it, r in zip(tested, log_residuals(tested, doc["groups"], doc["model_factors"]), strict=True):
            kind = ("new_hardware" if it[2][0] not in doc["groups"]   # only groups with rows get an entry
                    else "new_model" if it[1].model_id not in doc["model_factors"] else "known")
            by_kind[kind].append(float(r))
    out: dict[str, Any] = {"method": "fit on the strictly older rounds, fast evaluator, log(measured / "
                                     "predicted) of each newer round's rows, by what was new in them"}
    for kind, rs in by_kind.items():
        if rs:
            out[kind] = {**_residual_stats(np.asarray(rs)), "n_rows": len(rs)}
    return out


def _residual_stats(r: np.ndarray) -> dict[str, Any]:
    ape = units.frac_to_pct(np.abs(np.expm1(-r)))  # |pred - meas| / meas with r = log(meas / pred)
    return {
        "log_residual_quantiles": {f"p{round(units.frac_to_pct(q)):02d}": round(float(np.quantile(r, q)), 4)
                                   for q in QUANTILES},
        "log_residual_rms": round(float(np.sqrt(np.mean(r * r))), 4),
        "median_ape_pct": round(float(np.median(ape)), 2),
        "p90_ape_pct": round(float(np.percentile(ape, 90)), 2),
    }


def _document(items: list, state: _State, by_arch: dict, by_group: dict, source: str) -> dict:
    cal = state.calibration()
    residuals = log_residuals(items, cal, state.model_factors)
    index = {id(it[0]): i for i, it in enumerate(items)}
    groups: dict[str, Any] = {}
    for key, entry in sorted(cal.items()):
        if key.startswith("architecture:"):
            its = by_arch.get(key.split(":", 1)[1], [])
            level = "architecture pool" if its else "vendor pool (no rows of this architecture)"
        else:
            its, level = by_group[key], "group"
        params = {k: round(v, 4) for k, v in entry["params"].items()}
        doc: dict[str, Any] = {"params": params, "n_rows": len(its)}
        if its:
            doc["residuals"] = _residual_stats(residuals[[index[id(it[0])] for it in its]])
        doc["provenance"] = {"level": level, "fitted_on": source,
                             "models": sorted({it[1].model_id for it in its}),
                             "versions": sorted({it[0].version for it in its})}
        groups[key] = doc
    for model, entry in state.model_factors.items():   # the model's scatter, for sizing intervals
        entry["residuals"] = _residual_stats(np.asarray(
            [r for it, r in zip(items, residuals, strict=True) if it[1].model_id == model]))
    return {"groups": groups, "model_factors": state.model_factors, "meta": {
        "method": "MAP fit of log multipliers on efficiency.yaml defaults; fast steady-state evaluator "
                  "(simulator.replay, mode='fast'); hierarchy vendor -> architecture -> group",
        "n_rows": len(items), "residual_sigma": RESIDUAL_SIGMA,
        "prior_sigmas": {"vendor": SIGMA_VENDOR, "architecture": SIGMA_ARCH, "group": SIGMA_GROUP},
        "min_group_rows": MIN_GROUP_ROWS, "overall": _residual_stats(residuals),
        "sim_correction": _correction_method(state)}}


def _correction_method(state: _State) -> str:
    """How the document's ``sim_correction`` values were measured (provenance for the meta block)."""
    if not any("sim_correction" in f for f in state.model_factors.values()):
        return "not measured"
    return (f"median log(fast / simulated) over a systematic sample of {BRIDGE_CONFIGS} rows per model and "
            "scenario (full simulation, seed 0); applied to simulated predictions only")


def model_factors(document: dict) -> dict[str, Any]:
    """The ``model_factors`` mapping of a calibration document (empty when absent)."""
    return document.get("model_factors", {}) or {}


def calibration_dict(document: dict) -> dict[str, Any]:
    """The ``groups`` mapping of a calibration document (what ``lookup_efficiency`` takes)."""
    return document.get("groups", {})


# -------------------------------------------------------------------------------------------- I/O

def results_digest(path: str | Path | None) -> str:
    """'<file name> sha256:<first 12 hex>' of a results file (the shipped one when None)."""
    p = Path(path) if path is not None else profiles_dir() / "mlperf" / "results.csv"
    return f"{p.name} sha256:{hashlib.sha256(p.read_bytes()).hexdigest()[:12]}"


def write(document: dict, path: str | Path | None = None) -> Path:
    """Write the calibration YAML (default ``hardware_profiles/calibration.yaml``); returns the path."""
    target = Path(path) if path is not None else calibration_path()
    header = ("# Fitted efficiency factors (written by `fleetsim calibrate --write`; do not edit by hand).\n"
              "# Keys: <accelerator>/<compute family>/<framework> groups and architecture:<arch> pools;\n"
              "# params are read by simulator.efficiency.lookup_efficiency.\n"
              "# Residuals: log(measured / predicted) of the fast evaluator on the rows of each entry.\n")
    target.write_text(header + yaml.safe_dump(document, sort_keys=False, width=110))
    return target


def calibrate(results: str | Path | None = None, write_to: str | Path | None = None, write_file: bool = False,
              log: Callable[[str], None] | None = None, jobs: int = 1) -> dict:
    """CLI entry: fit on a results CSV (default the shipped one); optionally write the YAML.

    Returns {"path": written path or None, "n_rows", "groups": {key: {params, n_rows, median_ape_pct}},
    "model_factors" (with each model's ``sim_correction``), "overall": residual statistics}.
    """
    document = fit(mlperf.load_results(results), source=results_digest(results), log=log,
                   simulation_bridge=True, jobs=jobs)
    path = write(document, write_to) if (write_file or write_to is not None) else None
    summary = {k: {"params": v["params"], "n_rows": v["n_rows"],
                   "median_ape_pct": v.get("residuals", {}).get("median_ape_pct")}
               for k, v in document["groups"].items()}
    return {"path": str(path) if path else None, "n_rows": document["meta"]["n_rows"], "groups": summary,
            "model_factors": model_factors(document),
            "overall": document["meta"]["overall"], "document": document}


# ----------------------------------------------------------------------------------- uncertainty

def load_calibration(path: str | Path | None = None) -> dict:
    """The calibration document (empty dict when the file does not exist)."""
    p = Path(path) if path is not None else calibration_path()
    if not p.exists():
        return {}
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: malformed YAML ({str(exc).splitlines()[0]})") from None

