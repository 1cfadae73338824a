"""Speculative decoding: the step model's per-token units against closed forms, the engine's budget,
the memory plan, the data-file and scenario checks, and where the MLPerf replay tries it."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import yaml

from simulator.data import profiles_dir
from simulator.deployment import (
    Layout,
    make_deployment,
    non_expert_precision,
    plan_memory,
    prefill_budget_tokens,
    weights_bytes_per_gpu,
)
from simulator.engine import ReplicaEngine, RequestTable
from simulator.errors import InputError
from simulator.formats import FORMATS, gemm_compute_family
from simulator.iteration import StepModel
from simulator.kv_cache import KVCache
from simulator.models import load_model_file
from simulator.scenario import load_scenario

CASES = [
    ("deepseek-r1", "b200", "fp4", Layout(tp=8)),
    ("deepseek-r1", "b200", "fp4", Layout(tp=8, ep=8, attention="dp")),
    ("gpt-oss-120b", "h200", "fp8", Layout(tp=2)),
]


def pair(model: str, hw: str, prec: str, layout: Layout):
    plain = make_deployment(model, hw, prec, layout)
    return plain, make_deployment(model, hw, prec, dataclasses.replace(layout, speculative=True))


def draft_forward_s(dep, batch: float) -> float:
    """One draft forward from the model file's figures: its active weights read once, 2 FLOPs per
    parameter per sequence, both split over the replica's GPUs, at the deployment's efficiency."""
    spec, acc, eff = dep.model.speculative, dep.accelerator, dep.efficiency
    gpus = dep.layout.gpus
    weights_bytes = spec.draft_active_params * FORMATS[spec.draft_weights_format].bytes_per_element / gpus
    family = gemm_compute_family(non_expert_precision(dep), acc.supported_compute_formats)
    peak = acc.peak_flops_per_s(family) * eff.compute_frac
    return max(weights_bytes / (acc.hbm_bandwidth_bytes_per_s * eff.memory_frac),
               2.0 * spec.draft_active_params * batch / gpus / peak)


@pytest.mark.parametrize(("model", "hw", "prec", "layout"), CASES)
@pytest.mark.parametrize(("prefill", "batch", "ctx"), [(0, 1, 2000), (0, 64, 3000), (1024, 32, 1500)])
def test_a_speculative_step_is_the_real_step_per_emitted_token(model, hw, prec, layout, prefill, batch, ctx):
    """Per emitted token: (k draft forwards + one verification of k + 1 tokens per sequence and tau times
    the prefill) / tau, tau the acceptance length."""
    plain, spec_dep = pair(model, hw, prec, layout)
    sd = spec_dep.model.speculative
    tau, k = sd.acceptance_length_tokens, sd.draft_tokens
    pairs = prefill * 700.0
    real = StepModel(plain).step_time_s(tau * prefill, tau * pairs, 0.0, batch, batch * ctx, 0.0,
                                        batch * (k + 1))
    expected = (real + k * draft_forward_s(spec_dep, batch)) / tau
    got = StepModel(spec_dep).step_time_s(prefill, pairs, 0.0, batch, batch * ctx, 0.0)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("model", "hw", "prec", "layout"), CASES)
def test_speculation_pays_at_small_batches(model, hw, prec, layout):
    """Decode is memory-bound at batch 1: verifying k + 1 tokens costs about one step, so the time per
    token falls by nearly the acceptance length (less the drafts)."""
    plain, spec_dep = pair(model, hw, prec, layout)
    p, s = StepModel(plain), StepModel(spec_dep)
    tau = spec_dep.model.speculative.acceptance_length_tokens
    one_plain, one_spec = p.time_of(p.decode_shape(1, 2000)), s.time_of(s.decode_shape(1, 2000))
    assert one_plain / tau < one_spec < one_plain / (0.6 * tau)


def test_the_draft_lives_in_memory_and_shrinks_the_kv_cache():
    plain, spec_dep = pair("deepseek-r1", "b200", "fp4", Layout(tp=8))
    sd = spec_dep.model.speculative
    extra = weights_bytes_per_gpu(spec_dep) - weights_bytes_per_gpu(plain)
    assert extra == pytest.approx(sd.draft_params * FORMATS["fp8"].bytes_per_element / 8)
    kv_plain, kv_spec = plan_memory(plain), plan_memory(spec_dep)
    assert kv_spec.kv_budget_bytes_per_gpu == pytest.approx(kv_plain.kv_budget_bytes_per_gpu - extra)
    assert kv_spec.kv_capacity_tokens < kv_plain.kv_capacity_tokens


def test_prefill_budget_leaves_the_verified_tokens_and_scales_per_emitted_token():
    plain, spec_dep = pair("gpt-oss-120b", "h200", "fp8", Layout(tp=2))
    sd = spec_dep.model.speculative
    assert prefill_budget_tokens(plain, 100) == plain.max_batched_tokens - 100
    assert prefill_budget_tokens(spec_dep, 100) == pytest.approx(
        (spec_dep.max_batched_tokens - 100 * (sd.draft_tokens + 1)) / sd.acceptance_length_tokens)


def lone_request_s(dep, input_tokens: int, output_tokens: int) -> tuple[float, int]:
    """(time from first to last token, engine steps after the first token) of one request alone."""
    model = StepModel(dep)
    table = RequestTable([0.0], [input_tokens], [output_tokens])
    engine = ReplicaEngine(0, model, KVCache(100_000, 16), table, max_num_seqs=8,
                           max_batched_tokens=dep.max_batched_tokens)
    engine.enqueue(0)
    now, steps_after_first = 0.0, 0
    while math.isnan(table.finish_at_s[0]):
        now += engine.plan_step(now)
        engine.finish_step(now)
        steps_after_first += not math.isnan(table.first_token_at_s[0])
    return table.finish_at_s[0] - table.first_token_at_s[0], steps_after_first - 1


def test_the_engine_emits_tau_tokens_per_real_step():
    """A lone request with speculative decoding: still one engine step per token, each lasting the real
    verification step (plus drafts) over tau, at the context that step sees."""
    plain, spec_dep = pair("deepseek-r1", "b200", "fp4", Layout(tp=8))
    sd = spec_dep.model.speculative
    n_in, n_out = 1000, 400
    decode_s, steps = lone_request_s(spec_dep, n_in, n_out)
    assert steps == n_out - 1
    verify = StepModel(plain)
    expected = sum(
        (verify.step_time_s(0, 0, 0, 1, n_in + i, 0, sd.draft_tokens + 1)
         + sd.draft_tokens * draft_forward_s(spec_dep, 1)) / sd.acceptance_length_tokens
        for i in range(1, n_out)
    )
    assert decode_s == pytest.approx(expected, rel=1e-9)
    plain_s, _ = lone_request_s(plain, n_in, n_out)
    assert decode_s < plain_s / 2.0


def _write_model(tmp_path: Path, **speculative) -> Path:
    raw = yaml.safe_load((profiles_dir() / "models" / "deepseek-r1.yaml").read_text())
    raw["speculative"].update(speculative)
    path = tmp_path / "deepseek-r1.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("acceptance_length_tokens", 4.5, "exceeds draft_tokens + 1"),
    ("acceptance_length_tokens", 1.0, "greater than 1"),
    ("draft_weights_format", "fp5", "unknown draft_weights_format"),
    ("method", "medusa", "method"),
])
def test_bad_speculative_blocks_are_one_line_errors(tmp_path, field, value, needle):
    with pytest.raises(InputError, match=re.escape(needle)) as info:
        load_model_file(_write_model(tmp_path, **{field: value}))
    assert "\n" not in str(info.value)


def test_speculation_on_a_model_without_a_draft_is_bad_input():
    with pytest.raises(InputError, match=r"llama2-70b has no speculative decoding.*deepseek-r1"):
        make_deployment("llama2-70b", "h200", "fp8", Layout(tp=1, speculative=True))
    from simulator.candidates import enumerate_candidates

    sc = load_scenario("llama2-70b-1m-mi355x-server", ["layouts.speculative=[false,true]"])
    assert not any(c.layout.speculative for c in enumerate_candidates(sc))
    only = load_scenario("llama2-70b-1m-mi355x-server", ["layouts.speculative=true"])
    with pytest.raises(InputError, match=r"layouts\.speculative: llama2-70b has no speculative decoding"):
        enumerate_candidates(only)


def test_the_replay_tries_speculation_only_where_the_rules_allow_it():
    from simulator.replay import _layouts

    assert any(lay.speculative for lay in _layouts("deepseek-r1", 8, 8, "interactive"))
    assert any(lay.speculative for lay in _layouts("gpt-oss-120b", 8, 8, "interactive"))
    for model, scenario in [("deepseek-r1", "server"), ("gpt-oss-120b", "offline"),
                            ("llama2-70b", "interactive")]:
        assert not any(lay.speculative for lay in _layouts(model, 8, 8, scenario))
