"""Disaggregated prefill/decode serving in the replay: a system's GPUs split into prefill replicas and
decode replicas (each of its own layout); a request is prefilled on one, its KV handed over the fabric, and
decoded on another (NVIDIA Dynamo, llm-d, SGLang prefill/decode disaggregation).

Why it can win: in aggregated serving every step that carries prefill work is longer, so under a tight p99
TPOT limit the decode batch shrinks to leave room for it (llama3.1-405b Interactive: 9.4k-token prompts for
654-token outputs). Split, decode steps carry no prefill (the TPOT spread is only the batch's own), and
prefill runs in full chunks bounded by the TTFT limit alone. What it costs: the GPUs are partitioned, so the
two pools balance only in whole replicas, and prefill-only steps read the weights for compute-bound chunks.
Offline has no latency limit, so aggregated serving (which shares each weight read between prefill and
decode) is never worse there; the replay splits only Server and Interactive systems.

Fast rates, in requests/s per replica, from the same ``StepModel`` as the rest of the replay:

- decode: the largest decode-only batch b whose p99 TPOT meets the limit (``replay.server_batch`` on the
  decode-only step with no prefill term in the spread);
  rate = b / step(b) / mean output tokens (``step`` is per emitted token with speculative decoding).
- prefill: full chunks (``max_batched_tokens``) at utilisation u, with a request's TTFT stretched like a
  processor-sharing sojourn, prefill_time(p99 prompt) / (1 - u) <= TTFT limit, so
  u = min(PREFILL_UTILISATION_MAX, 1 - prefill_time(p99 prompt) / limit); rate = u chunk / step(chunk) /
  mean input tokens. The full simulation replaces both by LoadGen-like rate searches (``replay``).

The KV hand-off is not timed: 405b's 9.4k-token prompt is ~2.4 GB of FP8 KV, ~3 ms over 900 GB/s of NVLink
and ~50 ms over a 400 Gb/s NIC, spread over 654 output tokens (< 0.1 ms of TPOT each).
``balance``: whole replicas within the part's GPUs, n_p g_p + n_d g_d <= GPUs with n_p, n_d >= 1,
maximising min(n_p r_p, n_d r_d). ``best_pair`` tries every pair of fitting layouts (``role_rates``: prefill
without speculative decoding, which only drafts decode tokens). In full mode the replay simulates a
``shortlist`` of each role's layouts and balances the best pair on the simulated rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulator.deployment import Deployment, MemoryPlan
from simulator.iteration import StepModel

if TYPE_CHECKING:
    from simulator.replay import Lengths

PREFILL_UTILISATION_MAX = 0.9   # a prefill replica is never planned busier than this (queueing headroom)


@dataclass(frozen=True)
class Split:
    """A disaggregated plan of one part: ``n_prefill`` replicas of ``prefill`` and ``n_decode`` of ``decode``,
    with their fast rates (requests/s per replica)."""

    prefill: Deployment
    prefill_plan: MemoryPlan
    decode: Deployment
    decode_plan: MemoryPlan
    n_prefill: int
    n_decode: int
    prefill_rate_per_s: float
    decode_rate_per_s: float

    @property
    def rate_per_s(self) -> float:
        """Requests/s the split sustains: the slower pool's."""
        return min(self.n_prefill * self.prefill_rate_per_s, self.n_decode * self.decode_rate_per_s)

    def label(self) -> str:
        """e.g. 'disagg 3x TP2 prefill + 8x TP8 decode'."""
        return (f"disagg {self.n_prefill}x {self.prefill.layout.label()} prefill + "
                f"{self.n_decode}x {self.decode.layout.label()} decode")


def balance(gpus: int, prefill_gpus: int, decode_gpus: int, prefill_rate_per_s: float,
            decode_rate_per_s: float) -> tuple[int, int]:
    """(n_p, n_d) with n_p * prefill_gpus + n_d * decode_gpus <= ``gpus``, both >= 1, maximising
    min(n_p * prefill rate, n_d * decode rate); the fewest GPUs on a tie; (0, 0) if one of each does not fit
    or a rate is 0."""
    best, best_rate = (0, 0), 0.0
    if prefill_rate_per_s <= 0 or decode_rate_per_s <= 0:
        return best
    for n_p in range(1, (gpus - decode_gpus) // prefill_gpus + 1):
        n_d = (gpus - n_p * prefill_gpus) // decode_gpus
        # the decode replicas this many prefill replicas can keep busy, if fewer than fit
        n_d = min(n_d, max(1, math.ceil(n_p * prefill_rate_per_s / decode_rate_per_s)))
        rate = min(n_p * prefill_rate_per_s, n_d * decode_rate_per_s)
        if rate > best_rate * (1.0 + 1e-12):
            best, best_rate = (n_p, n_d), rate
    return best


def decode_rate_per_s(model: StepModel, dep: Deployment, plan: MemoryPlan, lens: Lengths,
                      tpot_limit_s: float) -> float:
    """Fast requests/s of one decode-only replica under the p99 TPOT limit."""
    from simulator import replay  # replay imports this module

    b_max = replay.max_batch(dep, plan, lens, with_prefill=False)
    step_s = replay._memoised(lambda n: replay._step_time_s(model, dep, n, lens, 0.0))
    b = replay.server_batch(model, dep, b_max, lens, tpot_limit_s, step_s, with_prefill=False)
    return b / step_s(b) / lens.mean_output if b else 0.0


def prefill_rate_per_s(model: StepModel, dep: Deployment, lens: Lengths, ttft_limit_s: float | None) -> float:
    """Fast requests/s of one prefill-only replica whose p99 prompt still meets the TTFT limit."""
    from simulator import replay

    utilisation = PREFILL_UTILISATION_MAX
    if ttft_limit_s is not None:
        utilisation = min(utilisation, 1.0 - model.prefill_time_s(int(lens.p99_input)) / ttft_limit_s)
    if utilisation <= 0.0:
        return 0.0
    chunk = dep.max_batched_tokens
    return utilisation * chunk / replay._step_time_s(model, dep, 0.0, lens, chunk) / lens.mean_input


RoleRates = list[tuple[Deployment, MemoryPlan, float]]   # (deployment, plan, requests/s per replica)


def role_rates(replicas: Sequence[tuple[Deployment, MemoryPlan, StepModel]], lens: Lengths,
               ttft_limit_s: float | None, tpot_limit_s: float | None) -> tuple[RoleRates, RoleRates]:
    """(prefill, decode): each layout of ``replicas`` (deployment, memory plan, calibrated step model) with
    its fast rate in that role (prefill: without speculative decoding, which only drafts decode tokens). The
    deployments returned are the step models' (they carry the calibrated efficiency the rates were priced
    with, which the full simulation must use too)."""
    prefill = [(model.deployment, plan, prefill_rate_per_s(model, dep, lens, ttft_limit_s))
               for dep, plan, model in replicas if not dep.layout.speculative]
    decode = [(model.deployment, plan, decode_rate_per_s(model, dep, plan, lens, tpot_limit_s or math.inf))
              for dep, plan, model in replicas]
    return prefill, decode


def best_pair(prefill: RoleRates, decode: RoleRates, gpus: int) -> Split | None:
    """The split of ``gpus`` with the highest rate over every (prefill, decode) pair of the given rates (the
    first such pair on a tie); None if no pair fits."""
    best: Split | None = None
    for p_dep, p_plan, r_p in prefill:
        for d_dep, d_plan, r_d in decode:
            n_p, n_d = balance(gpus, p_dep.layout.gpus, d_dep.layout.gpus, r_p, r_d)
            if n_p == 0:
                continue
            split = Split(p_dep, p_plan, d_dep, d_plan, n_p, n_d, r_p, r_d)
            if best is None or split.rate_per_s > best.rate_per_s * (1.0 + 1e-12):
                best = split
    return best


def shortlist(rates: RoleRates, k: int, gpus: int) -> RoleRates:
    """The at most ``k`` layouts of ``rates`` with a positive rate and at most ``gpus`` GPUs, highest rate per
    GPU first (the first on a tie)."""
    fits = [r for r in rates if r[0].layout.gpus <= gpus and r[2] > 0.0]
    return sorted(fits, key=lambda r: -r[2] / r[0].layout.gpus)[:k]
