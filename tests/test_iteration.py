"""Physics of the memory plan and iteration-time model: tests that can fail."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.deployment import Layout, kv_bytes_per_token_per_gpu, make_deployment, plan_memory
from simulator.errors import InputError
from simulator.iteration import BatchShape, StepModel, prefill_pairs

CASES = [
    ("llama2-70b", "h200", "fp8", 8),
    ("llama2-70b", "mi355x", "fp4", 1),
    ("llama2-70b", "h100", "fp8", 4),
    ("mixtral-8x7b", "mi300x", "fp8", 2),
    ("gpt-oss-120b", "b200", "fp4", 1),
    ("deepseek-r1", "b200", "fp4", 8),
    ("llama3.1-8b", "mi325x", "fp8", 1),
]


def _dep(model, hw, prec, tp, **kw):
    return make_deployment(model, hw, prec, Layout(tp=tp), **kw)


@pytest.mark.parametrize(("model", "hw", "prec", "tp"), CASES)
@given(batch=st.integers(1, 512), ctx=st.integers(1, 8192))
@settings(max_examples=30, deadline=None)
def test_decode_step_never_beats_hbm(model, hw, prec, tp, batch, ctx):
    """A decode step reads the weights it touches plus the KV it attends to: it cannot take less than
    those bytes / peak HBM bandwidth (per GPU)."""
    dep = _dep(model, hw, prec, tp, step_time_scale=1.0)  # pure physics (no calibrated model factor)
    sm = StepModel(dep)
    shape = sm.decode_shape(batch, ctx)
    floor_s = sm.min_decode_bytes_per_gpu(shape) / dep.accelerator.hbm_bandwidth_bytes_per_s
    assert sm.time_of(shape) >= floor_s


@pytest.mark.parametrize(("model", "hw", "prec", "tp"), CASES)
@pytest.mark.parametrize("field", ["hbm_bandwidth_bytes_per_s", "flops", "scaleup_bandwidth_bytes_per_s"])
def test_more_hardware_never_slows_a_step(model, hw, prec, tp, field):
    dep = _dep(model, hw, prec, tp)
    acc = dep.accelerator
    if field == "flops":
        faster = acc.with_overrides(
            **{f"peak_{f}_flops_per_s": 2 * acc.peak_flops_per_s(f) for f in acc.supported_compute_formats}
        )
    elif field == "scaleup_bandwidth_bytes_per_s" and acc.scaleup_topology == "mesh":
        faster = acc.with_overrides(
            scaleup_link_bandwidth_bytes_per_s=2 * acc.scaleup_link_bandwidth_bytes_per_s
        )
    else:
        faster = acc.with_overrides(**{field: 2 * getattr(acc, field)})
    fast = StepModel(dataclasses.replace(dep, accelerator=faster))
    slow = StepModel(dep)
    shapes = [slow.decode_shape(b, c) for b in (1, 16, 256) for c in (128, 4096)]
    shapes += [BatchShape(prefill_tokens=p, prefill_pairs_full=p * p / 2) for p in (64, 2048, 8192)]
    shapes += [
        BatchShape(
            prefill_tokens=512, prefill_pairs_full=512 * 256, decode_seqs=64, decode_ctx_full=64 * 1000
        )
    ]
    for shape in shapes:
        assert fast.time_of(shape) <= slow.time_of(shape)
    if field != "scaleup_bandwidth_bytes_per_s" or tp > 1:
        assert any(fast.time_of(s) < slow.time_of(s) for s in shapes)


def test_tp2_halves_dense_weights_per_gpu():
    one = plan_memory(_dep("llama2-70b", "h100", "fp8", 1))
    two = plan_memory(_dep("llama2-70b", "h100", "fp8", 2))
    assert two.weights_bytes_per_gpu == pytest.approx(one.weights_bytes_per_gpu / 2, rel=1e-12)


def test_llama2_kv_bytes_per_token_fp8():
    dep = _dep("llama2-70b", "h100", "fp8", 1)
    assert kv_bytes_per_token_per_gpu(dep) == 80 * 2 * 8 * 128 * 1 == 163_840


def test_kv_heads_split_then_replicate():
    """GQA with 8 KV heads: TP8 holds 1/8 per GPU; TP beyond the head count would replicate."""
    dep8 = _dep("llama2-70b", "h100", "fp8", 8)
    assert kv_bytes_per_token_per_gpu(dep8) == pytest.approx(163_840 / 8)


def test_mla_latent_replicated_under_tp_split_under_attention_dp():
    tp = make_deployment("deepseek-r1", "b200", "fp4", Layout(tp=8))
    dp = make_deployment("deepseek-r1", "b200", "fp4", Layout(tp=8, ep=8, attention="dp"))
    assert kv_bytes_per_token_per_gpu(tp) == pytest.approx(61 * 576 * 1.0)  # whole latent on every GPU
    p_tp, p_dp = plan_memory(tp), plan_memory(dp)
    assert p_dp.weights_bytes_per_gpu > p_tp.weights_bytes_per_gpu  # attention weights replicated
    assert p_dp.kv_bytes_per_token_per_gpu == p_tp.kv_bytes_per_token_per_gpu


def _step_with_network_frac(dep, frac: float, batch: int) -> float:
    eff = dataclasses.replace(dep.efficiency, network_frac=frac)  # NVLS all-reduce keeps its own fraction
    return StepModel(dataclasses.replace(dep, efficiency=eff)).time_of(BatchShape(decode_seqs=batch))


@pytest.mark.parametrize("model", ["deepseek-r1", "gpt-oss-120b", "mixtral-8x7b"])
def test_expert_all_to_all_sends_only_a_gpus_own_tokens_under_attention_dp(model: str):
    """EP8 behind attention-DP: each GPU dispatches its batch / 8 tokens to k experts, 7/8 of the copies
    leave the GPU, and gathers them back (bf16): per-GPU bytes = 2 k (7/8) hidden 2 B layers batch / 8.
    Halving the all-to-all fabric efficiency adds exactly that time once, whether or not the model has
    dense layers (and so all-reduces) besides its MoE layers. Behind TP attention every GPU holds every
    token: no all-to-all (the experts' partial sums are all-reduced)."""
    batch = 1024
    dp = make_deployment(model, "b200", "fp4", Layout(tp=8, ep=8, attention="dp"))
    m = dp.model
    per_gpu_bytes = 2 * m.experts_per_token * (7 / 8) * m.hidden_size * 2 * m.num_moe_layers * batch / 8
    added_s = _step_with_network_frac(dp, 0.5, batch) - _step_with_network_frac(dp, 1.0, batch)
    assert added_s == pytest.approx(per_gpu_bytes / dp.accelerator.scaleup_bandwidth_bytes_per_s, rel=1e-9)
    tp = make_deployment(model, "b200", "fp4", Layout(tp=8, ep=8, attention="tp"))
    assert _step_with_network_frac(tp, 0.5, batch) == pytest.approx(_step_with_network_frac(tp, 1.0, batch))


def test_moe_decode_reads_fewer_experts_at_batch_1_than_256():
    for model, hw, prec, tp in [
        ("mixtral-8x7b", "h100", "fp8", 2),
        ("gpt-oss-120b", "b200", "fp4", 1),
        ("deepseek-r1", "b200", "fp4", 8),
    ]:
        sm = StepModel(_dep(model, hw, prec, tp))
        kv_free = {"decode_ctx_full": 0.0}
        b1 = sm.min_decode_bytes_per_gpu(BatchShape(decode_seqs=1, **kv_free))
        b256 = sm.min_decode_bytes_per_gpu(BatchShape(decode_seqs=256, **kv_free))
        assert b1 < b256


def test_weight_only_fp4_on_hopper_runs_at_fp8_rate():
    dep = _dep("llama2-70b", "h200", "fp4", 8)
    assert dep.compute_family == "fp8"
    assert dep.precision.weight_bytes_per_param < 1.0
    assert any("weight-only" in n for n in dep.notes)


def test_fp6_rate_differs_by_vendor():
    amd, nv = _dep("llama2-70b", "mi355x", "fp6", 1), _dep("llama2-70b", "b200", "fp6", 1)
    assert amd.accelerator.peak_flops_per_s("fp6") == amd.accelerator.peak_flops_per_s("fp4")
    assert nv.accelerator.peak_flops_per_s("fp6") == nv.accelerator.peak_flops_per_s("fp8")


def test_prefill_grows_with_input_and_decode_with_context():
    sm = StepModel(_dep("llama2-70b", "h100", "fp8", 8))
    assert sm.prefill_time_s(2048) > sm.prefill_time_s(512) > sm.prefill_time_s(64)
    assert sm.time_of(sm.decode_shape(64, 4096)) > sm.time_of(sm.decode_shape(64, 256))


def test_pipeline_parallel_step_is_not_faster_than_weights_read():
    """With PP the weights are read once per micro-batch: the step cannot beat weights / bandwidth."""
    dep = make_deployment("llama3.1-405b", "h100", "fp8", Layout(tp=8, pp=2))
    sm = StepModel(dep)
    weights_s = plan_memory(dep).weights_bytes_per_gpu / dep.accelerator.hbm_bandwidth_bytes_per_s
    assert sm.time_of(sm.decode_shape(1, 100)) > weights_s


def test_step_time_scale_multiplies_kernel_time_not_the_overhead():
    base = _dep("llama2-70b", "h200", "fp8", 2, step_time_scale=1.0)
    slow = dataclasses.replace(base, step_time_scale=2.5)
    shape = StepModel(base).decode_shape(64, 1000)
    overhead_s = base.efficiency.step_overhead_s + 64 * base.efficiency.seq_overhead_s
    kernel_s = StepModel(base).time_of(shape) - overhead_s
    assert StepModel(slow).time_of(shape) - overhead_s == pytest.approx(2.5 * kernel_s)
    with pytest.raises(InputError):
        _dep("llama2-70b", "h200", "fp8", 2, step_time_scale=0.0)


def test_per_sequence_overhead_adds_exactly_its_cost_per_decoding_sequence():
    base = _dep("llama2-70b", "h200", "fp8", 2, step_time_scale=1.0)
    eff = base.efficiency
    none = dataclasses.replace(base, efficiency=dataclasses.replace(eff, seq_overhead_s=0.0))
    some = dataclasses.replace(base, efficiency=dataclasses.replace(eff, seq_overhead_s=25e-6))
    slow = dataclasses.replace(some, step_time_scale=3.0)
    for batch in (1, 64, 512):
        shape = StepModel(base).decode_shape(batch, 1000)
        extra_s = StepModel(some).time_of(shape) - StepModel(none).time_of(shape)
        assert extra_s == pytest.approx(25e-6 * batch, rel=1e-9)
        # not a kernel time: the kernel scale leaves it alone
        kernel_s = StepModel(none).time_of(shape) - eff.step_overhead_s
        assert StepModel(slow).time_of(shape) == pytest.approx(
            3.0 * kernel_s + eff.step_overhead_s + 25e-6 * batch)
    prefill_only = BatchShape(prefill_tokens=512, prefill_pairs_full=prefill_pairs(512, 0))
    assert StepModel(some).time_of(prefill_only) == pytest.approx(StepModel(none).time_of(prefill_only))
    # the twin used by calibration prices it too
    assert StepModel(none).with_efficiency(some.efficiency).time_of(shape) == pytest.approx(
        StepModel(some).time_of(shape))


def test_model_throughput_factor_takes_the_scenario_factor_plus_the_latest_round():
    from simulator.efficiency import model_throughput_factor

    factors = {"gpt-oss-120b": {"log_throughput_factor": -0.9,
                                "by_scenario": {"server": -1.0, "offline": -0.8, "interactive": -1.4},
                                "by_version": {"v5.1": 0.5, "v6.0": 0.2}}}
    assert model_throughput_factor("gpt-oss-120b", factors) == pytest.approx(math.exp(-0.8))  # server + v6.0
    assert model_throughput_factor("gpt-oss-120b", factors, "offline") == pytest.approx(math.exp(-0.6))
    assert model_throughput_factor("llama2-70b", factors) == 1.0  # no factor: pure physics
    assert _dep("gpt-oss-120b", "b200", "fp4", 1).step_time_scale == 1.0  # deployments are the roofline model


def test_nearest_mlperf_scenario_compares_tpot_limits_in_ratio():
    from simulator.efficiency import nearest_mlperf_scenario

    # llama2-70b: Server 200 ms, Interactive 40 ms; the geometric midpoint is sqrt(200 * 40) = 89.4 ms
    assert [nearest_mlperf_scenario("llama2-70b", ms / 1000) for ms in (20, 40, 80, 100, 200, 450)] == [
        "interactive", "interactive", "interactive", "server", "server", "server"]
    assert nearest_mlperf_scenario("mixtral-8x7b", 0.01) == "server"   # no Interactive scenario in the rules
    assert nearest_mlperf_scenario("qwen3-vl-235b-a22b", 0.04) == "server"   # no limits at all


def test_sizing_factor_adds_the_simulation_correction_of_the_nearest_scenario_only():
    from simulator.efficiency import model_log_factor, sizing_throughput_factor

    factors = {"llama2-70b": {"log_throughput_factor": 0.05, "by_scenario": {"server": 0.02},
                              "by_version": {"v6.0": 0.01},
                              "sim_correction": {"server": 0.03, "interactive": 0.17, "offline": -0.4}}}
    server, interactive = (sizing_throughput_factor("llama2-70b", tpot_s, factors) for tpot_s in (0.2, 0.04))
    assert server == pytest.approx(math.exp(0.02 + 0.01 + 0.03))
    assert interactive == pytest.approx(math.exp(0.02 + 0.01 + 0.17))
    assert sizing_throughput_factor("gpt-oss-120b", 0.04, factors) == 1.0
    # the fast evaluator never sees the correction; a simulated prediction of a row adds its scenario's
    assert model_log_factor("llama2-70b", factors, "offline", "v6.0") == pytest.approx(0.05 + 0.01)
    assert model_log_factor("llama2-70b", factors, "offline", "v6.0", simulated=True) == pytest.approx(
        0.05 + 0.01 - 0.4)


def test_sizing_note_states_the_factor_the_sizing_applies():
    from simulator.efficiency import model_throughput_factor, sizing_throughput_factor
    from simulator.estimate import factor_notes

    for tpot_s, scenario in ((0.04, "Interactive"), (0.2, "Server")):
        (note,) = factor_notes("llama2-70b", tpot_s)
        factor = sizing_throughput_factor("llama2-70b", tpot_s)
        assert note.startswith(f"sizing multiplies throughput by x{factor:.2f}")
        assert f"at MLPerf {scenario}," in note
    (plain,) = factor_notes("llama2-70b")
    assert plain.startswith(f"sizing multiplies throughput by x{model_throughput_factor('llama2-70b'):.2f}:")
    base = model_throughput_factor("llama2-70b")
    ratios = [sizing_throughput_factor("llama2-70b", tpot_s) / base for tpot_s in (0.2, 0.04)]
    assert plain.endswith(f"(Server x{ratios[0]:.2f}, Interactive x{ratios[1]:.2f})")


@pytest.mark.parametrize(
    "layout",
    [Layout(tp=1), Layout(tp=8), Layout(tp=8, ep=8, attention="dp"), Layout(tp=4, ep=4, attention="tp"),
     Layout(tp=4, pp=2), Layout(tp=8, ep=8, attention="dp", speculative=True)],
)
def test_with_efficiency_is_a_model_built_with_that_efficiency(layout):
    """``with_efficiency`` keeps the geometry and re-derives the rates: every constant equals that of a
    ``StepModel`` built from the deployment with the new efficiency, and so does every step time."""
    dep = make_deployment("deepseek-r1", "b200", "fp4", layout)
    eff = dep.efficiency.scaled(compute_frac=0.7, memory_frac=0.8, network_frac=0.6, step_overhead_s=1.3)
    twin = StepModel(dep).with_efficiency(eff)
    built = StepModel(dataclasses.replace(dep, efficiency=eff))
    for name in StepModel.__slots__:
        if name not in ("_deployment", "_base_deployment"):
            assert getattr(twin, name) == getattr(built, name), name
    assert twin.deployment == built.deployment
    shape = BatchShape(prefill_tokens=512, prefill_pairs_full=3e5, decode_seqs=64, decode_ctx_full=64e3)
    assert twin.time_of(shape) == built.time_of(shape)
    assert twin.prefill_time_s(20000) == built.prefill_time_s(20000)
