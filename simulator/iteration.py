"""Iteration-time model: how long one engine step takes for a given batch.

A step processes prefill chunks (``prefill_tokens`` new tokens, attending to ``prefill_pairs_*``
query-key pairs, i.e. their cached context plus the causal triangle) and decode sequences
(``decode_seqs`` sequences, one query token each, reading ``decode_ctx_*`` cached tokens in total).
It is priced per GPU of one pipeline stage as a sum of rooflines plus communication:

    stage = max(F_dense / P, B_dense / BW)            dense GEMMs (attention projections, MLPs, lm_head)
          + max(F_moe / P, D(T) * B_expert / BW)      routed experts: D(T) distinct experts touched
          + max(F_attn / P_attn, B_kv / BW)           attention over the KV cache
          + all-reduce / all-to-all over the scale-up fabric (TP, EP)
    step  = scale * pp * (stage on 1/pp of the batch + pipeline hand-off) + fixed per-step overhead
            + per-sequence overhead x decoding sequences

where P = dense peak of the GEMM's compute format x ``compute_frac`` and BW = HBM peak x
``memory_frac``. With PP the replica keeps ``pp`` micro-batches in flight, so every sequence
advances one token per ``pp`` stage times (weights are re-read per micro-batch). Collectives follow
the algorithm used on the topology: ring all-reduce ``2(n-1)/n * S / (bw * network_frac)`` on a
switch, in-network reduction (NVLS) ``S / (bw * nvls_frac)`` for n >= its minimum, and a direct
all-to-all over the ``n-1`` point-to-point links of an AMD mesh ``2 S / (n * link_bw * network_frac)``,
each plus a latency. Expert parallelism behind data-parallel attention moves each GPU's own tokens
(1/n of the batch) to their k experts and back: an all-to-all of 2 k (n-1)/n hidden-size activations per
token of that GPU; behind TP attention every GPU already holds every token and the experts' partial
outputs are summed by an all-reduce. All quantities are SI (s, bytes, FLOP, FLOP/s, bytes/s).

``scale`` is ``Deployment.step_time_scale``: 1.0 (pure physics) everywhere in the product; the calibrated
per-model factor multiplies throughput instead (``efficiency.model_throughput_factor``).

Monotonicity (tested): more bandwidth or FLOP/s never lengthens a step; with scale 1 a decode step never
takes less than (weights it touches + KV it reads) / HBM bandwidth.

Room for what comes next: ``decode_query_tokens`` > ``decode_seqs`` prices speculative-decoding
steps that verify several tokens per sequence; a prefill-only or decode-only replica simply calls
the model with only that part of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simulator.deployment import (
    Deployment,
    draft,
    kv_bytes_per_token_per_gpu,
    non_expert_precision,
    query_tokens_per_seq,
    tokens_per_step,
)
from simulator.efficiency import Efficiency
from simulator.formats import FORMATS, Precision, gemm_compute_family
from simulator.hardware import Accelerator

ALLREDUCE_BYTES_PER_ELEMENT = FORMATS["bf16"].bytes_per_element  # collectives move bf16 activations
ALLREDUCES_PER_LAYER = 2  # after attention and after the MLP / MoE block


@dataclass(frozen=True)
class BatchShape:
    """The aggregates of one step's batch (token counts; pairs are query-key pairs)."""

    prefill_tokens: float = 0.0
    prefill_pairs_full: float = 0.0
    prefill_pairs_sliding: float = 0.0
    decode_seqs: float = 0.0
    decode_ctx_full: float = 0.0
    decode_ctx_sliding: float = 0.0
    decode_query_tokens: float | None = None  # defaults to decode_seqs (one token per sequence)


def prefill_pairs(chunk_tokens: float, cached_tokens: float, window_tokens: float | None = None) -> float:
    """Query-key pairs of a causal prefill chunk: chunk x cached + chunk(chunk+1)/2, each query capped
    at ``window_tokens`` keys for a sliding-window layer (approximated by the mean query position)."""
    full = chunk_tokens * cached_tokens + chunk_tokens * (chunk_tokens + 1) / 2
    if window_tokens is None:
        return full
    return min(full, chunk_tokens * window_tokens)


class StepModel:
    """Prices engine steps of one deployment; constants are precomputed so a step costs ~30 flops.

    The constants split in two: the deployment's geometry (bytes, FLOPs and collective message sizes per
    token, independent of the efficiency factors) and the rates it is divided by (peaks x efficiency
    fractions). ``with_efficiency`` re-derives only the rates, so pricing one deployment under many
    efficiencies (the calibration's optimiser) computes the geometry once.
    """

    __slots__ = (
        "_a2a_bw",
        "_a2a_bytes_per_token",
        "_acc_peak",
        "_allreduce_bw",
        "_ar_bytes_per_token",
        "_ar_count",
        "_attn_acc_peak",
        "_attn_flops_full",
        "_attn_flops_sliding",
        "_attn_peak",
        "_base_deployment",
        "_bw",
        "_dense_acc_peak",
        "_dense_bytes",
        "_dense_flops_per_token",
        "_dense_mem_s",
        "_dense_peak",
        "_deployment",
        "_draft_bytes",
        "_draft_flops_per_token",
        "_efficiency",
        "_expert_bytes",
        "_expert_miss",
        "_experts",
        "_k",
        "_kv_bytes_full",
        "_kv_bytes_sliding",
        "_latency_s",
        "_moe_flops_per_token",
        "_moe_layers",
        "_overhead_s",
        "_p2p_bw",
        "_p2p_bytes_per_token",
        "_p2p_link_bw",
        "_peak",
        "_pp",
        "_q",
        "_scale",
        "_seq_overhead_s",
        "_tau",
        "_tp",
    )

    def __init__(self, dep: Deployment) -> None:
        self._deployment: Deployment | None = dep
        self._base_deployment = dep   # holds the geometry; its efficiency may differ from this model's
        acc, lay = dep.accelerator, dep.layout
        self._tp, self._pp = lay.tp, lay.pp
        # Dense tensor peaks (FLOP/s) of the expert, non-expert and attention GEMMs, before efficiency
        self._acc_peak = acc.peak_flops_per_s(dep.compute_family)
        dense_family = gemm_compute_family(non_expert_precision(dep), acc.supported_compute_formats)
        self._dense_acc_peak = acc.peak_flops_per_s(dense_family)
        kv_fmt = dep.precision.kv_cache
        attn_family = gemm_compute_family(Precision(kv_fmt, kv_fmt, kv_fmt), acc.supported_compute_formats)
        self._attn_acc_peak = acc.peak_flops_per_s(attn_family)
        self._init_weights(dep)
        self._init_attention(dep)
        self._init_comm(dep)
        self._init_speculative(dep)
        self._scale = dep.step_time_scale
        self._set_rates(dep.efficiency)

    @property
    def deployment(self) -> Deployment:
        """The deployment priced, with this model's efficiency (built on first use after
        ``with_efficiency``)."""
        if self._deployment is None:
            self._deployment = replace(self._base_deployment, efficiency=self._efficiency)
        return self._deployment

    def with_efficiency(self, eff: Efficiency) -> StepModel:
        """A plain ``StepModel`` of the same deployment under efficiency ``eff``: the same step times as
        ``StepModel(dataclasses.replace(self.deployment, efficiency=eff))``, without recomputing the
        geometry."""
        twin = StepModel.__new__(StepModel)
        # the geometry, attribute by attribute (a loop over __slots__ costs several times more per twin)
        twin._base_deployment, twin._tp, twin._pp, twin._scale = (
            self._base_deployment, self._tp, self._pp, self._scale)
        twin._acc_peak, twin._dense_acc_peak, twin._attn_acc_peak = (
            self._acc_peak, self._dense_acc_peak, self._attn_acc_peak)
        twin._dense_bytes, twin._dense_flops_per_token = self._dense_bytes, self._dense_flops_per_token
        twin._moe_layers, twin._experts, twin._k = self._moe_layers, self._experts, self._k
        twin._expert_miss = self._expert_miss
        twin._expert_bytes, twin._moe_flops_per_token = self._expert_bytes, self._moe_flops_per_token
        twin._kv_bytes_full, twin._kv_bytes_sliding = self._kv_bytes_full, self._kv_bytes_sliding
        twin._attn_flops_full, twin._attn_flops_sliding = self._attn_flops_full, self._attn_flops_sliding
        twin._latency_s, twin._ar_count = self._latency_s, self._ar_count
        twin._ar_bytes_per_token = self._ar_bytes_per_token
        twin._a2a_bytes_per_token = self._a2a_bytes_per_token
        twin._p2p_bytes_per_token, twin._p2p_link_bw = self._p2p_bytes_per_token, self._p2p_link_bw
        twin._tau, twin._q = self._tau, self._q
        twin._draft_bytes, twin._draft_flops_per_token = self._draft_bytes, self._draft_flops_per_token
        twin._deployment = self._deployment if eff is self._efficiency else None
        twin._set_rates(eff)
        return twin

    def _set_rates(self, eff: Efficiency) -> None:
        """The efficiency-dependent constants: peaks (FLOP/s), bandwidths (bytes/s), per-step overhead (s)."""
        acc = self._base_deployment.accelerator
        self._efficiency = eff
        self._peak = self._acc_peak * eff.compute_frac
        self._dense_peak = self._dense_acc_peak * eff.compute_frac
        self._attn_peak = self._attn_acc_peak * eff.compute_frac
        self._bw = acc.hbm_bandwidth_bytes_per_s * eff.memory_frac
        self._dense_mem_s = self._dense_bytes / self._bw
        self._allreduce_bw = self._a2a_bw = float("inf")
        if self._tp > 1:
            self._allreduce_bw = _allreduce_rate(acc, eff, self._tp)
            if self._a2a_bytes_per_token:
                self._a2a_bw = _alltoall_rate(acc, eff, self._tp)
        self._p2p_bw = self._p2p_link_bw * eff.network_frac
        self._overhead_s = eff.step_overhead_s
        self._seq_overhead_s = eff.seq_overhead_s

    def _init_weights(self, dep: Deployment) -> None:
        m, lay = dep.model, dep.layout
        w = dep.precision.weight_bytes_per_param
        wd = non_expert_precision(dep).weight_bytes_per_param   # every weight but the routed experts
        hp = max(wd, FORMATS["fp8"].bytes_per_element)
        per_stage_gpu = 1.0 / (lay.tp * lay.pp)
        attn_share = 1.0 / lay.pp if lay.attention == "dp" else per_stage_gpu
        other = m.dense_params - m.lm_head_params - m.attention_params
        self._dense_bytes = (
            other * wd + m.lm_head_params * hp
        ) * per_stage_gpu + m.attention_params * wd * attn_share
        self._dense_flops_per_token = 2.0 * m.dense_params * per_stage_gpu
        self._moe_layers = m.num_moe_layers / lay.pp
        self._experts = float(m.num_experts)
        self._k = float(m.experts_per_token)
        # chance that a token misses a given expert
        self._expert_miss = 1.0 - self._k / self._experts if self._experts else 1.0
        self._expert_bytes = m.expert_params * w / lay.tp  # per touched expert per layer, per GPU
        self._moe_flops_per_token = 2.0 * m.experts_per_token * m.expert_params * self._moe_layers / lay.tp

    def _init_attention(self, dep: Deployment) -> None:
        m, lay = dep.model, dep.layout
        per_token_gpu = kv_bytes_per_token_per_gpu(dep)  # full layers of one stage
        dp_share = 1.0 / lay.tp if lay.attention == "dp" else 1.0  # DP: each GPU reads its own sequences
        sliding_ratio = m.kv_elements_per_token_sliding / m.kv_elements_per_token_full
        self._kv_bytes_full = per_token_gpu * dp_share
        self._kv_bytes_sliding = per_token_gpu * dp_share * sliding_ratio
        self._attn_flops_full = m.attention_flops_per_query_key_full / (lay.pp * lay.tp)
        self._attn_flops_sliding = m.attention_flops_per_query_key_sliding / (lay.pp * lay.tp)

    def _init_comm(self, dep: Deployment) -> None:
        """Message sizes (bytes per token) and counts of the collectives; their rates: ``_set_rates``."""
        acc, m, lay = dep.accelerator, dep.model, dep.layout
        tp = lay.tp
        act = ALLREDUCE_BYTES_PER_ELEMENT * m.hidden_size
        layers = m.num_layers / lay.pp
        self._latency_s = acc.allreduce_latency_s
        self._ar_bytes_per_token = act
        self._a2a_bytes_per_token = 0.0
        self._ar_count = 0.0
        if tp > 1:
            attn_ar = layers if lay.attention == "tp" else 0.0
            # EP behind data-parallel attention: each GPU dispatches its own tokens (1/tp of the batch) to
            # the experts they chose and gathers the results back; behind TP attention every GPU already
            # holds every token, so its local experts' partial outputs are summed by an all-reduce.
            moe_a2a = self._moe_layers if lay.ep > 1 and lay.attention == "dp" else 0.0
            self._ar_count = attn_ar + (layers - moe_a2a)
            if moe_a2a:
                remote = m.experts_per_token * (tp - 1) / tp  # copies of a token that leave its GPU
                self._a2a_bytes_per_token = 2.0 * remote * act * moe_a2a / tp
        self._p2p_bytes_per_token = act if lay.pp > 1 else 0.0
        crosses_nodes = lay.gpus > acc.scaleup_domain_gpus   # the PP hand-off goes over the NIC
        self._p2p_link_bw = (
            acc.scaleout_bandwidth_bytes_per_s if crosses_nodes else acc.scaleup_bandwidth_bytes_per_s
        )

    def _init_speculative(self, dep: Deployment) -> None:
        """Speculative decoding (``Layout.speculative``): tokens emitted per step, tokens verified per
        sequence, and the draft's bytes and FLOPs per forward on one GPU (weights split like the model's)."""
        self._tau, self._q = tokens_per_step(dep), query_tokens_per_seq(dep)
        spec = draft(dep)
        self._draft_bytes = self._draft_flops_per_token = 0.0
        if spec is not None:
            gpus = dep.layout.gpus
            self._draft_bytes = (
                spec.draft_active_params * FORMATS[spec.draft_weights_format].bytes_per_element / gpus
            )
            self._draft_flops_per_token = 2.0 * spec.draft_active_params / gpus

    def _speculative_step_s(
        self, prefill_tokens: float, pairs_full: float, pairs_sliding: float, decode_seqs: float,
        ctx_full: float, ctx_sliding: float,
    ) -> float:
        """A speculative step in per-token units (see ``step_time_s``): the real step -- the draft's
        ``_q - 1`` forwards, then one verification pass over ``_q`` query tokens per decoding sequence and
        ``_tau`` times the prefill -- divided by the ``_tau`` tokens it emits per sequence."""
        tau = self._tau
        verify = self.step_time_s(
            tau * prefill_tokens, tau * pairs_full, tau * pairs_sliding, decode_seqs, ctx_full, ctx_sliding,
            decode_seqs * self._q,
        )
        draft = 0.0
        if decode_seqs > 0:
            draft = max(
                self._draft_bytes / self._bw, self._draft_flops_per_token * decode_seqs / self._dense_peak
            )
        return (verify + (self._q - 1) * self._scale * draft) / tau

    def step_time_s(
        self,
        prefill_tokens: float,
        prefill_pairs_full: float,
        prefill_pairs_sliding: float,
        decode_seqs: float,
        decode_ctx_full: float,
        decode_ctx_sliding: float,
        decode_query_tokens: float | None = None,
    ) -> float:
        """Duration (s) of one engine step for the batch aggregates (see ``BatchShape``).

        With speculative decoding (and ``decode_query_tokens`` None) the arguments and the result are in
        per-token units: every sequence emits ``_tau`` tokens per real step, so the engine steps once per
        token, a step lasting 1 / ``_tau`` of the real one and carrying 1 / ``_tau`` of its prefill
        (``_speculative_step_s``). Time per token, KV growth per token and prefill throughput are those of
        the real engine; only the granularity is finer."""
        if self._q > 1 and decode_query_tokens is None:
            return self._speculative_step_s(
                prefill_tokens, prefill_pairs_full, prefill_pairs_sliding, decode_seqs, decode_ctx_full,
                decode_ctx_sliding,
            )
        pp = self._pp
        queries = decode_seqs if decode_query_tokens is None else decode_query_tokens
        tokens = (prefill_tokens + queries) / pp  # tokens of one micro-batch
        if tokens <= 0:
            return 0.0
        # max(compute, memory) of each roofline, written out (``b if b > a else a`` is ``max(a, b)``): this
        # is the hot path of calibration
        dense = self._dense_flops_per_token * tokens / self._dense_peak
        if self._dense_mem_s > dense:
            dense = self._dense_mem_s
        moe = 0.0
        if self._moe_layers:
            touched = self._experts * (1.0 - self._expert_miss ** tokens)
            moe = self._moe_flops_per_token * tokens / self._peak
            moe_mem = self._moe_layers * touched * self._expert_bytes / self._bw
            if moe_mem > moe:
                moe = moe_mem
        ctx_bytes = (decode_ctx_full + prefill_tokens) * self._kv_bytes_full + (
            decode_ctx_sliding * self._kv_bytes_sliding
        )
        pairs_flops = (
            prefill_pairs_full + decode_ctx_full * queries / (1.0 if decode_seqs < 1.0 else decode_seqs)
        ) * self._attn_flops_full
        pairs_flops += (prefill_pairs_sliding + decode_ctx_sliding) * self._attn_flops_sliding
        attn = pairs_flops / pp / self._attn_peak
        attn_mem = ctx_bytes / pp / self._bw
        if attn_mem > attn:
            attn = attn_mem
        comm = 0.0
        if self._ar_count:
            comm = self._ar_count * (self._ar_bytes_per_token * tokens / self._allreduce_bw + self._latency_s)
        if self._a2a_bytes_per_token:  # apart: an all-MoE model behind DP attention has no all-reduce
            a2a_s = self._a2a_bytes_per_token * tokens / self._a2a_bw
            comm += a2a_s + 2.0 * self._moe_layers * self._latency_s
        p2p = self._p2p_bytes_per_token * tokens / self._p2p_bw + self._latency_s if pp > 1 else 0.0
        return (self._scale * pp * (dense + moe + attn + comm + p2p) + self._overhead_s
                + self._seq_overhead_s * decode_seqs)

    def time_of(self, shape: BatchShape) -> float:
        """``step_time_s`` for a ``BatchShape``."""
        return self.step_time_s(
            shape.prefill_tokens,
            shape.prefill_pairs_full,
            shape.prefill_pairs_sliding,
            shape.decode_seqs,
            shape.decode_ctx_full,
            shape.decode_ctx_sliding,
            shape.decode_query_tokens,
        )

    def decode_shape(self, batch: int, context_tokens: float) -> BatchShape:
        """A pure decode step of ``batch`` sequences each with ``context_tokens`` cached."""
        window = self._base_deployment.model.sliding_window_tokens
        sliding_ctx = min(context_tokens, window) if window else 0.0
        return BatchShape(
            decode_seqs=batch, decode_ctx_full=batch * context_tokens, decode_ctx_sliding=batch * sliding_ctx
        )

    def prefill_time_s(self, input_tokens: int, chunk_tokens: int | None = None) -> float:
        """Time to prefill one prompt alone, in chunks of at most ``chunk_tokens`` (one step per chunk)."""
        dep = self._base_deployment   # model and token budget: the same whatever the efficiency
        chunk = chunk_tokens or dep.max_batched_tokens
        window = dep.model.sliding_window_tokens
        total, done = 0.0, 0
        while done < input_tokens:
            c = min(chunk, input_tokens - done)
            shape = BatchShape(
                prefill_tokens=c,
                prefill_pairs_full=prefill_pairs(c, done),
                prefill_pairs_sliding=prefill_pairs(c, done, window) if window else 0.0,
                decode_query_tokens=0.0,  # a real step (no decode, so no speculative per-token units)
            )
            total += self.time_of(shape)
            done += c
        return total

    def min_decode_bytes_per_gpu(self, shape: BatchShape) -> float:
        """Bytes a decode step must read from HBM on one GPU: touched weights plus the KV it attends to."""
        tokens = (shape.decode_query_tokens or shape.decode_seqs) / self._pp
        touched = (
            self._experts * (1.0 - (1.0 - self._k / self._experts) ** tokens) if self._moe_layers else 0.0
        )
        weights = self._pp * (self._dense_bytes + self._moe_layers * touched * self._expert_bytes)
        kv = shape.decode_ctx_full * self._kv_bytes_full + shape.decode_ctx_sliding * self._kv_bytes_sliding
        return weights + kv


def _switched_ring_rate(acc: Accelerator, eff: Efficiency, n: int) -> float:
    if acc.in_network_reduction and n >= eff.nvls_min_gpus:
        return acc.scaleup_bandwidth_bytes_per_s * eff.nvls_network_frac
    return acc.scaleup_bandwidth_bytes_per_s * eff.network_frac * n / (2.0 * (n - 1))


def _allreduce_rate(acc: Accelerator, eff: Efficiency, n: int) -> float:
    """``allreduce_bus_bandwidth`` (bytes/s) from the accelerator and the efficiency factors."""
    if acc.scaleup_topology == "mesh" and acc.scaleup_link_bandwidth_bytes_per_s:
        links = min(n - 1, acc.scaleup_links_per_gpu or n - 1)
        return links * acc.scaleup_link_bandwidth_bytes_per_s * eff.network_frac * n / (2.0 * (n - 1))
    return _switched_ring_rate(acc, eff, n)


def _alltoall_rate(acc: Accelerator, eff: Efficiency, n: int) -> float:
    """``alltoall_bandwidth`` (bytes/s) from the accelerator and the efficiency factors."""
    if acc.scaleup_topology == "mesh" and acc.scaleup_link_bandwidth_bytes_per_s:
        links = min(n - 1, acc.scaleup_links_per_gpu or n - 1)
        return links * acc.scaleup_link_bandwidth_bytes_per_s * eff.network_frac
    return acc.scaleup_bandwidth_bytes_per_s * eff.network_frac


def allreduce_bus_bandwidth(dep: Deployment, n: int) -> float:
    """Effective all-reduce rate (bytes of message per second) over ``n`` GPUs of the scale-up fabric.

    Message time = S / rate. Ring on a switch: rate = bw * frac * n / (2(n-1)); NVLS: bw * nvls_frac;
    direct on a full mesh of point-to-point links: rate = n * link_bw * frac / 2 (each GPU uses its
    n-1 links to its peers).
    """
    return _allreduce_rate(dep.accelerator, dep.efficiency, n)


def alltoall_bandwidth(dep: Deployment, n: int) -> float:
    """Per-GPU send rate of an all-to-all over ``n`` GPUs (bytes/s)."""
    return _alltoall_rate(dep.accelerator, dep.efficiency, n)
