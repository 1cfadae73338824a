"""Replay an MLPerf result as a fleetsim scenario: predict its output tokens/s from descriptive columns.

A ``mlperf.ReplaySpec`` (model, scenario, p99 limits, precision, framework family, the system's parts
and node size) becomes, per part (one accelerator kind and its GPU count):

1. Layout search: every ``Layout`` with TP in {1, 2, 4, 8} (at most the node / NVLink domain and the
   part's GPUs; an NVL72 rack is one domain), for MoE models also EP = TP with tensor- or data-parallel
   attention, and PP = 2 only when nothing fits on one domain, that fits in memory. The layout with the
   highest predicted output tokens/s per GPU (fast evaluator below) wins; replicas = GPUs // (tp * pp).
2. Prediction of one replica, then times replicas:
   - ``fast``: a steady-state evaluation from the same ``StepModel`` (used by calibration).
     Offline: the largest batch B that fits (KV at the time-weighted mean context, ``max_num_seqs``,
     the per-step token budget), each step = B decodes + the prefill tokens that arrive per step
     (B * mean_input / mean_output); tokens/s = B / step time. Server/Interactive: the largest batch
     whose step time stays under ``TPOT_MARGIN`` x the TPOT limit and whose long-prompt prefill meets the
     TTFT limit, capped at ``SERVER_LOAD_CAP`` x the Offline rate (queueing needs headroom).
   - ``full``: the discrete-event simulation (``simulation.run``). Offline: N requests at t = 0; the
     steady rate S (tokens generated before the last admission / that instant) and the drain's lost time
     give the 600 s MLPerf-equivalent S * 600 / (600 + lost), plus load imbalance between replicas
     (static split: the spread of per-replica work, sqrt(2 ln R) sigma). Server/Interactive: LoadGen-like
     search on the Poisson rate of one replica (seeded, same draws at every rate) for the highest rate
     whose run meets both p99 limits; tokens/s = rate * mean output tokens.
3. Multi-node systems: replicas never span nodes unless PP is needed (then the hand-off goes over the
   scale-out NIC, priced by ``StepModel``); across nodes the cost is the imbalance/tail term above
   (request dispatch over the network adds microseconds, negligible against the TTFT limits).

Blind spots (flagged per row, predicted as aggregated, non-speculative serving): speculative decoding
(DeepSeek-R1 / gpt-oss Interactive) and disaggregated prefill/decode (Dynamo).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from simulator.deployment import Deployment, Layout, MemoryPlan, make_deployment, plan_memory
from simulator.efficiency import Efficiency, lookup_efficiency
from simulator.errors import InputError
from simulator.hardware import load_accelerator
from simulator.iteration import BatchShape, StepModel
from simulator.metrics import Slo
from simulator.mlperf import ReplaySpec
from simulator.models import load_model
from simulator.simulation import run
from simulator.workload import OfflineArrivals, PoissonArrivals, Workload, benchmark_workload

TP_CHOICES = (1, 2, 4, 8)
TPOT_MARGIN = 0.85          # fast server: mean step time under this fraction of the TPOT limit (p99 headroom)
SERVER_LOAD_CAP = 0.92      # fast server: at most this fraction of the Offline rate (queueing headroom)
MLPERF_RUN_S = 600.0        # MLPerf minimum run length: the Offline tail is amortised over it
OFFLINE_MAX_REQUESTS = 6000
SERVER_TARGET_REQUESTS = 1500
SEARCH_STEPS = 6            # bisection steps of the rate search (about 1% resolution)
_LENGTH_SAMPLES = 20000


@dataclass(frozen=True)
class Lengths:
    """Token-length statistics of a benchmark (tokens): means, time-weighted decode context, etc."""

    mean_input: float
    mean_output: float
    decode_context: float        # E[out * (in + out / 2)] / E[out]: mean context a decode step sees
    pairs_per_prefill_token: float  # E[in^2] / (2 E[in])
    p99_input: float
    output_cv: float


@functools.lru_cache(maxsize=16)
def lengths(model_id: str) -> Lengths:
    """Length statistics of the MLPerf dataset of ``model_id`` (fixed seed, 20000 samples)."""
    model = benchmark_workload(model_id)
    inp, out = model.sample(_LENGTH_SAMPLES, np.random.default_rng(12345))
    inp, out = inp.astype(float), out.astype(float)
    return Lengths(
        mean_input=float(inp.mean()), mean_output=float(out.mean()),
        decode_context=float(np.sum(out * (inp + out / 2.0)) / np.sum(out)),
        pairs_per_prefill_token=float(np.mean(inp * inp) / (2.0 * inp.mean())),
        p99_input=float(np.percentile(inp, 99)), output_cv=float(out.std() / out.mean()),
    )


@dataclass(frozen=True)
class PartKey:
    """What a per-replica prediction depends on (besides efficiency): one kind of GPU in a system."""

    accelerator_id: str
    model_id: str
    precision: str
    framework: str
    scenario: str
    max_tp: int                  # GPUs of one node / NVLink domain available to a replica
    gpus: int                    # GPUs of this part (caps the layout)
    ttft_limit_s: float | None
    tpot_limit_s: float | None


def part_keys(spec: ReplaySpec) -> list[tuple[PartKey, int]]:
    """(key, GPU count) per part of a system. The layout may use at most min(node, part GPUs) for TP."""
    out = []
    for acc_id, count in spec.parts:
        acc = load_accelerator(acc_id)
        domain = acc.scaleup_domain_gpus if acc.scaleup_domain_gpus > spec.gpus_per_node else spec.gpus_per_node
        key = PartKey(acc_id, spec.model_id, spec.precision, spec.framework_family, spec.scenario,
                      min(domain, count, max(TP_CHOICES)), min(count, 2 * max(TP_CHOICES)),
                      spec.ttft_limit_s, spec.tpot_limit_s)
        out.append((key, count))
    return out


def _layouts(model_id: str, max_tp: int, gpus: int) -> list[Layout]:
    model = load_model(model_id)
    out: list[Layout] = []
    for pp in (1, 2):
        for tp in TP_CHOICES:
            if tp > max_tp or tp * pp > gpus or model.num_heads % tp:
                continue
            out.append(Layout(tp=tp, pp=pp))
            if model.num_experts and tp > 1:
                out.append(Layout(tp=tp, pp=pp, ep=tp, attention="tp"))
                out.append(Layout(tp=tp, pp=pp, ep=tp, attention="dp"))
    return out


@functools.lru_cache(maxsize=512)
def candidates(key: PartKey) -> tuple[tuple[Deployment, MemoryPlan], ...]:
    """Deployments (default efficiency) of every layout that fits; PP=2 only if no PP=1 layout fits."""
    fits: list[tuple[Deployment, MemoryPlan]] = []
    for layout in _layouts(key.model_id, key.max_tp, key.gpus):
        if layout.pp > 1 and any(d.layout.pp == 1 for d, _ in fits):
            break
        try:
            dep = make_deployment(key.model_id, key.accelerator_id, key.precision, layout, framework=key.framework)
        except InputError:
            continue
        plan = plan_memory(dep)
        if plan.fits and plan.kv_capacity_blocks > 0:
            fits.append((dep, plan))
    return tuple(fits)


def _step_shape(dep: Deployment, batch: float, lens: Lengths) -> BatchShape:
    prefill = batch * lens.mean_input / lens.mean_output
    window = dep.model.sliding_window_tokens
    pairs = prefill * lens.pairs_per_prefill_token
    return BatchShape(
        prefill_tokens=prefill, prefill_pairs_full=pairs,
        prefill_pairs_sliding=min(pairs, prefill * window) if window else 0.0,
        decode_seqs=batch, decode_ctx_full=batch * lens.decode_context,
        decode_ctx_sliding=batch * min(lens.decode_context, window) if window else 0.0)


def max_batch(dep: Deployment, plan: MemoryPlan, lens: Lengths) -> int:
    """Largest steady decode batch: KV at the mean context, max_num_seqs, and the per-step token budget."""
    kv = plan.kv_capacity_tokens / (lens.decode_context + plan.kv_block_tokens / 2.0)
    budget = dep.max_batched_tokens / (1.0 + lens.mean_input / lens.mean_output)
    return max(1, int(min(kv, dep.max_num_seqs, budget)))


def fast_replica(dep: Deployment, plan: MemoryPlan, key: PartKey, lens: Lengths) -> float:
    """Steady-state output tokens/s of one replica (see module docstring, ``fast``)."""
    model = StepModel(dep)
    b_max = max_batch(dep, plan, lens)
    offline = b_max / model.time_of(_step_shape(dep, b_max, lens))
    if key.scenario == "offline":
        return offline
    limit = TPOT_MARGIN * (key.tpot_limit_s or math.inf)
    if model.time_of(_step_shape(dep, 1, lens)) > limit:
        return 0.0
    lo, hi = 1, b_max
    while hi - lo > 1:   # step time grows with the batch: bisect for the largest batch under the limit
        mid = (lo + hi) // 2
        if model.time_of(_step_shape(dep, mid, lens)) <= limit:
            lo = mid
        else:
            hi = mid
    b = hi if model.time_of(_step_shape(dep, hi, lens)) <= limit else lo
    rate = b / model.time_of(_step_shape(dep, b, lens))
    ttft = model.prefill_time_s(int(lens.p99_input)) + model.time_of(_step_shape(dep, b, lens))
    if key.ttft_limit_s is not None and ttft > key.ttft_limit_s:
        return 0.0
    return min(rate, SERVER_LOAD_CAP * offline)


def _with_eff(dep: Deployment, eff: Efficiency) -> Deployment:
    return replace(dep, efficiency=eff)


def efficiency_for(acc_id: str, family: str, framework: str, calibration: dict[str, Any] | None) -> Efficiency:
    """Efficiency of a group from a calibration dict (None: the shipped calibration file)."""
    acc = load_accelerator(acc_id)
    return lookup_efficiency(acc_id, acc.architecture, family, framework, calibration=calibration)


def best_layout(key: PartKey, calibration: dict[str, Any] | None) -> tuple[Deployment, MemoryPlan, float] | None:
    """(deployment with the calibrated efficiency, plan, fast tokens/s per replica) of the best layout."""
    lens = lengths(key.model_id)
    best = None
    for dep, plan in candidates(key):
        eff = efficiency_for(key.accelerator_id, dep.compute_family, dep.framework, calibration)
        d = _with_eff(dep, eff)
        tput = fast_replica(d, plan, key, lens)
        if tput > 0 and (best is None or tput / d.layout.gpus > best[2] / best[0].layout.gpus):
            best = (d, plan, tput)
    return best


def imbalance_lost_s(replicas: int, lens: Lengths, requests_per_replica: float, run_s: float) -> float:
    """Offline time lost waiting for the slowest of ``replicas`` statically-fed replicas (s)."""
    if replicas <= 1 or requests_per_replica <= 0:
        return 0.0
    cv_work = lens.output_cv / math.sqrt(requests_per_replica)
    return run_s * cv_work * math.sqrt(2.0 * math.log(replicas))


def simulate_offline(dep: Deployment, plan: MemoryPlan, lens: Lengths, fast_tput: float,
                     seed: int = 0) -> dict[str, float]:
    """Full simulation of one replica fed N requests at t = 0; MLPerf 600 s-equivalent tokens/s."""
    b_max = max_batch(dep, plan, lens)
    n = int(min(max(6 * b_max, 600), OFFLINE_MAX_REQUESTS))
    out = run(dep, Workload(arrivals=OfflineArrivals(num_requests=n), benchmark=dep.model.id), duration_s=1.0,
              seed=seed)
    rec = out.run.records
    finish, first = rec.finish_at_s, rec.first_token_at_s
    t_admit = float(np.nanmax(rec.scheduled_at_s)) if rec.scheduled_at_s is not None else float(np.nanmax(first))
    t_last = float(np.nanmax(finish))
    tokens = rec.output_tokens.astype(float)
    span = np.maximum(finish - first, 1e-12)
    after = np.clip((finish - np.maximum(t_admit, first)) / span, 0.0, 1.0) * tokens
    after[first > t_admit] = tokens[first > t_admit]
    tail_tokens = float(after.sum())
    steady = (float(tokens.sum()) - tail_tokens) / t_admit if t_admit > 0 else float(tokens.sum()) / t_last
    lost = max(0.0, (t_last - t_admit) - tail_tokens / steady) if steady > 0 else 0.0
    return {"steady_tokens_per_s": steady, "replay_requests": float(n), "replay_duration_s": t_last,
            "drain_lost_s": lost, "replica_tokens_per_s": steady * MLPERF_RUN_S / (MLPERF_RUN_S + lost)}


def _server_run(dep: Deployment, key: PartKey, lens: Lengths, rate_per_s: float, seed: int,
                requests: int) -> dict[str, Any]:
    e2e_s = lens.mean_output * (key.tpot_limit_s or 0.0) * TPOT_MARGIN
    warmup_s = max(min(0.2 * requests / rate_per_s, 30.0), 1.5 * e2e_s)
    duration_s = warmup_s + requests / rate_per_s
    slo = Slo(ttft_p99_s=key.ttft_limit_s or math.inf, tpot_p99_s=key.tpot_limit_s or math.inf)
    out = run(dep, Workload(arrivals=PoissonArrivals(rate_per_s=rate_per_s), benchmark=dep.model.id),
              duration_s=duration_s, seed=seed, slo=slo, warmup_s=warmup_s)
    s = out.summary
    return {"ok": bool(s.slo_met), "ttft_p99_s": s.ttft_s.p99.value, "tpot_p99_s": s.tpot_s.p99.value,
            "duration_s": duration_s}


def simulate_server(dep: Deployment, key: PartKey, lens: Lengths, fast_tput: float, seed: int = 0,
                    requests: int = SERVER_TARGET_REQUESTS) -> dict[str, Any]:
    """LoadGen-like search for the highest Poisson rate of one replica meeting both p99 limits."""
    guess = max(fast_tput / lens.mean_output, 1e-3)
    ok_rate, bad_rate = 0.0, math.inf
    rate, last_ok = guess, None
    for _ in range(8):  # bracket: grow or shrink by 25% until the outcome flips
        res = _server_run(dep, key, lens, rate, seed, requests)
        if res["ok"]:
            ok_rate, last_ok = rate, res
            if bad_rate < math.inf:
                break
            rate *= 1.25
        else:
            bad_rate = rate
            if ok_rate > 0:
                break
            rate *= 0.8
    if ok_rate == 0.0:
        return {"replica_tokens_per_s": 0.0, "rate_per_s": 0.0, "note": "no rate met the p99 limits"}
    for _ in range(SEARCH_STEPS if bad_rate < math.inf else 0):
        mid = math.sqrt(ok_rate * bad_rate)
        res = _server_run(dep, key, lens, mid, seed, requests)
        if res["ok"]:
            ok_rate, last_ok = mid, res
        else:
            bad_rate = mid
    return {"replica_tokens_per_s": ok_rate * lens.mean_output, "rate_per_s": ok_rate,
            "ttft_p99_s": last_ok["ttft_p99_s"], "tpot_p99_s": last_ok["tpot_p99_s"],
            "replay_duration_s": last_ok["duration_s"]}


def _efficiency_signature(dep: Deployment) -> tuple:
    e = dep.efficiency
    return (round(e.compute_frac, 6), round(e.memory_frac, 6), round(e.network_frac, 6),
            round(e.step_overhead_s, 9))


_FULL_CACHE: dict[tuple, dict[str, Any]] = {}


def predict_part(key: PartKey, count: int, calibration: dict[str, Any] | None, mode: str = "full",
                 seed: int = 0) -> dict[str, Any]:
    """Prediction for one part of a system: layout, replicas, tokens/s (``mode`` 'fast' or 'full')."""
    best = best_layout(key, calibration)
    if best is None:
        return {"tokens_per_s": 0.0, "unsupported": f"no layout of {key.model_id} {key.precision} fits/meets "
                                                    f"the limits on {key.accelerator_id} (TP <= {key.max_tp})"}
    dep, plan, fast = best
    lens = lengths(key.model_id)
    replicas = count // dep.layout.gpus
    info: dict[str, Any] = {"accelerator": key.accelerator_id, "layout": dep.layout.label(), "replicas": replicas,
                            "fast_replica_tokens_per_s": fast, "efficiency_source": dep.efficiency.source}
    if replicas < 1:
        return {**info, "tokens_per_s": 0.0, "unsupported": "fewer GPUs than one replica needs"}
    if mode == "fast":
        per_replica = fast
    else:
        cache_key = (key, dep.layout, _efficiency_signature(dep), seed)
        if cache_key not in _FULL_CACHE:
            if key.scenario == "offline":
                _FULL_CACHE[cache_key] = simulate_offline(dep, plan, lens, fast, seed)
            else:
                _FULL_CACHE[cache_key] = simulate_server(dep, key, lens, fast, seed)
        info.update(_FULL_CACHE[cache_key])
        per_replica = info["replica_tokens_per_s"]
    factor = 1.0
    if key.scenario == "offline":
        n_per_replica = per_replica * MLPERF_RUN_S / lens.mean_output
        lost = imbalance_lost_s(replicas, lens, n_per_replica, MLPERF_RUN_S)
        factor = MLPERF_RUN_S / (MLPERF_RUN_S + lost)
    info["imbalance_factor"] = factor
    info["tokens_per_s"] = per_replica * replicas * factor
    return info


def predict(spec: ReplaySpec, calibration: dict[str, Any] | None = None, mode: str = "full",
            seed: int = 0) -> dict[str, Any]:
    """Predicted output tokens/s of a replayed MLPerf row (sum over the system's parts).

    Returns {"predicted": tokens/s, "parts": [...], "blind_spots": [...]} or, when no part can run the
    model, {"unsupported": reason}. Depends only on ``spec`` (descriptive columns) and the calibration.
    """
    parts = [predict_part(key, count, calibration, mode, seed) for key, count in part_keys(spec)]
    bad = [p["unsupported"] for p in parts if p.get("unsupported")]
    if bad:
        return {"unsupported": bad[0], "parts": parts}
    blind = []
    if spec.speculative_decoding_allowed:
        blind.append("speculative decoding allowed (not modelled)")
    if spec.disaggregated:
        blind.append("disaggregated prefill/decode (modelled as aggregated)")
    return {"predicted": float(sum(p["tokens_per_s"] for p in parts)), "parts": parts, "blind_spots": blind}
