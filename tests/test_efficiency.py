"""Efficiency defaults: every figure sourced and physical; lookups resolve per architecture/framework."""

from __future__ import annotations

import pytest
import yaml

from simulator.data import profiles_dir
from simulator.deployment import Layout, make_deployment
from simulator.efficiency import lookup_efficiency, memory_settings, normalise_framework
from simulator.errors import InputError
from simulator.hardware import list_accelerators


def _figures(node, path=""):
    if isinstance(node, dict) and "value" in node:
        yield path, node
        return
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _figures(child, f"{path}.{key}" if path else key)


def test_every_default_has_a_source_and_is_physical():
    data = yaml.safe_load((profiles_dir() / "efficiency.yaml").read_text())
    figures = list(_figures(data))
    assert len(figures) > 20
    for path, fig in figures:
        assert set(fig) <= {"value", "source", "note"}, path
        assert str(fig.get("source", "")).strip(), f"{path} has no source"
        name = path.rsplit(".", 1)[-1]
        if name.endswith("_frac") and not path.startswith("in_network_reduction"):
            assert 0 < fig["value"] <= 1, path
        assert fig["value"] > 0, path


@pytest.mark.parametrize("acc", list_accelerators(), ids=lambda a: a.id)
@pytest.mark.parametrize("framework", ["trtllm", "vllm", "sglang"])
def test_lookup_resolves_for_every_accelerator(acc, framework):
    for family in acc.supported_compute_formats:
        eff = lookup_efficiency(acc.id, acc.architecture, family, framework)
        assert 0 < eff.compute_frac <= 1 and 0 < eff.memory_frac <= 1 and 0 < eff.network_frac <= 1
        assert eff.step_overhead_s >= 0 and eff.seq_overhead_s >= 0


def test_both_overheads_come_from_the_calibration_file_in_their_units():
    """Every calibrated group's step overhead (ms) and per-sequence cost (us) reach the deployment in s."""
    from simulator import units
    from simulator.calibration import load_calibration
    from simulator.hardware import load_accelerator

    groups = load_calibration()["groups"]
    keys = [k for k in groups if not k.startswith("architecture:")]
    assert keys
    for key in keys:
        acc_id, family, framework = key.split("/")
        eff = lookup_efficiency(acc_id, load_accelerator(acc_id).architecture, family, framework)
        params = groups[key]["params"]
        assert eff.step_overhead_s == pytest.approx(units.ms_to_s(params["step_overhead_ms"])), key
        assert eff.seq_overhead_s == pytest.approx(units.us_to_s(params["seq_overhead_us"])), key
        assert eff.seq_overhead_s > 0, key


def test_framework_names():
    assert normalise_framework("TensorRT-LLM") == "trtllm"
    assert normalise_framework("vLLM") == "vllm"
    with pytest.raises(InputError, match="valid choices"):
        normalise_framework("onnx")


def test_memory_settings():
    m = memory_settings()
    assert 0 < m["reserve_frac"] < 0.5 and m["runtime_reserve_bytes"] > 0 and m["kv_block_tokens"] >= 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"layout": Layout(tp=3)}, "does not divide"),
        ({"layout": Layout(tp=0)}, "tp must be a positive integer"),
        ({"layout": Layout(ep=2)}, "dense"),
        ({"layout": Layout(pp=100)}, "exceeds the 80 layers"),
        ({"layout": Layout(attention="xx")}, "attention must be"),
        ({"framework": "onnx"}, "unknown framework"),
        ({"kv_precision": "fp5"}, "unknown numeric format"),
    ],
)
def test_bad_layouts_are_input_errors(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        make_deployment("llama2-70b", "h100", "fp8", **kwargs)


def test_ep_cannot_exceed_replica_gpus():
    with pytest.raises(InputError, match="exceeds the replica"):
        make_deployment("mixtral-8x7b", "h100", "fp8", Layout(tp=2, ep=4))
