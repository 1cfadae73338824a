"""Scenario files: every shipped file validates, presets expand into plain fields, overrides reach any field,
and bad input fails with one line naming the problem and the valid choices."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from simulator.data import scenarios_dir
from simulator.errors import InputError
from simulator.mlperf import slo_limits_s
from simulator.scenario import Scenario, length_distribution, load_scenario
from simulator.scenario_files import (
    build_scenario,
    json_schema,
    list_scenarios,
    load_raw,
    parse_grid,
    parse_override,
    scenario_hash,
)
from simulator.units import s_to_ms
from simulator.workload import benchmark_workload

SHIPPED = (
    "llama2-70b-1m-mi355x-server",
    "llama2-70b-1m-mi355x-interactive",
    "gpt-oss-120b-1m-mi355x",
    "compare-generations-llama2-70b",
    "llama2-70b-cost-power",
    "deepseek-r1-1m-b200",
)
SERVER = "llama2-70b-1m-mi355x-server"


def test_the_shipped_scenarios_are_there():
    assert set(SHIPPED) <= set(list_scenarios())


@pytest.mark.parametrize("path", sorted(scenarios_dir().glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_validates_and_is_frozen(path):
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert sc.target_output_tokens_per_s() > 0 and sc.target_rate_per_s() > 0
    with pytest.raises(Exception):  # noqa: B017 (pydantic raises ValidationError on frozen models)
        sc.model = "other"  # type: ignore[misc]


def test_mlperf_presets_expand_into_plain_fields():
    server = load_scenario(SERVER)
    interactive = load_scenario("llama2-70b-1m-mi355x-interactive")
    for sc, scenario in ((server, "server"), (interactive, "interactive")):
        ttft_s, tpot_s = slo_limits_s("llama2-70b", scenario)
        assert sc.slo.ttft_p99_ms == pytest.approx(s_to_ms(ttft_s))
        assert sc.slo.tpot_p99_ms == pytest.approx(s_to_ms(tpot_s))
    out = server.workload.output_tokens
    assert out.kind == "empirical" and out.max_tokens == 1024
    # the expanded workload reproduces the benchmark preset's lengths
    preset = benchmark_workload("llama2-70b")
    lengths = server.workload.length_model()
    assert lengths.paired
    assert lengths.mean_output_tokens == pytest.approx(preset.mean_output_tokens, rel=1e-3)
    assert lengths.mean_input_tokens == pytest.approx(preset.mean_input_tokens, rel=1e-9)


def test_gpt_oss_preset_is_lognormal_with_the_measured_mean():
    sc = load_scenario("gpt-oss-120b-1m-mi355x")
    assert sc.workload.output_tokens.kind == "lognormal"
    assert sc.workload.output_tokens.mean_tokens == pytest.approx(1311.0, abs=0.1)
    assert sc.slo.tpot_p99_ms == pytest.approx(80.0)


def test_the_issue_example_overrides_work():
    sc = load_scenario(SERVER, ["slo.tpot_p99_ms=40", "workload.output_tokens.mean_tokens=500",
                                "target.output_tokens_per_s=2e6"])
    assert sc.slo.tpot_p99_ms == 40 and sc.slo.ttft_p99_ms == 2000
    assert sc.slo.source is None  # no longer the preset's numbers
    assert sc.target.output_tokens_per_s == 2e6
    assert sc.workload.output_tokens.mean_tokens == 500
    assert sc.workload.length_model().mean_output_tokens == pytest.approx(500, rel=0.01)
    assert sc.target_rate_per_s() == pytest.approx(2e6 / sc.workload.length_model().mean_output_tokens)


def test_preset_keys_reexpand_and_exclusive_fields_clear_each_other():
    sc = load_scenario(SERVER, ["slo.preset=mlperf-interactive", "target.requests_per_s=100",
                                "hardware=h100,h200", "layouts.tp=1", "costs.usd_per_kwh=0.1"])
    assert (sc.slo.ttft_p99_ms, sc.slo.tpot_p99_ms) == (450.0, 40.0)
    assert sc.target.requests_per_s == 100 and sc.target.output_tokens_per_s is None
    assert sc.hardware == ["h100", "h200"] and sc.layouts.tp == [1]
    assert sc.costs is not None and sc.costs.usd_per_kwh == 0.1 and sc.costs.pue == 1.0
    mixtral = load_scenario(SERVER, ["workload.benchmark=mixtral-8x7b"])
    assert mixtral.workload.output_tokens.mean_tokens == pytest.approx(145.7, abs=0.1)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["slo.tpot_p99=40"], ["unknown scenario setting 'slo.tpot_p99'", "slo.tpot_p99_ms",
                               "slo.ttft_p99_ms"]),
        (["simulaton.seed=3"], ["'simulaton.seed'", "did you mean simulation"]),
        (["slo.tpot_p99_ms.x=1"], ["'slo.tpot_p99_ms' is a value"]),
        (["hardware=mi35x"], ["unknown hardware 'mi35x'", "did you mean mi355x"]),
        (["formats=fp9"], ["unknown precision 'fp9'"]),
        (["slo.tpot_p99_ms=-5"], ["slo.tpot_p99_ms", "greater than 0"]),
        (["slo.preset=mlperf-offline"], ["unknown SLO preset 'mlperf-offline'", "mlperf-server"]),
        (["simulation.router=fastest"], ["unknown router 'fastest'", "least-outstanding"]),
        (["target.output_tokens_per_s=lots"], ["target.output_tokens_per_s"]),
        (["no-equals-sign"], ["--set expects path=value"]),
        (["costs.usd_per_gpu_hour.h1000=2"], ["unknown hardware 'h1000'"]),
    ],
)
def test_bad_overrides_fail_with_one_line(overrides, needles):
    with pytest.raises(InputError) as err:
        load_scenario(SERVER, overrides)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_malformed_files_fail_with_one_line_naming_the_file(tmp_path):
    server = (scenarios_dir() / f"{SERVER}.yaml").read_text()
    cases = {
        "broken.yaml": ("model: llama2-70b\nworkload: [unclosed\n", ["malformed YAML", "line"]),
        "dupe.yaml": ("model: llama2-70b\nmodel: llama2-70b\n", ["duplicate key 'model'"]),
        "list.yaml": ("- a\n- b\n", ["must be a YAML mapping"]),
        "extra.yaml": (server + "colour: blue\n", ["unknown key 'colour'"]),
        "nested.yaml": (server.replace("  tp: [1, 2, 4, 8]", "  tp: [1]\n  tpp: [2]"),
                        ["unknown key 'layouts.tpp'", "valid keys under layouts", "replicas_per_node"]),
    }
    for name, (text, needles) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError) as err:
            load_scenario(path)
        message = str(err.value)
        assert "\n" not in message and name in message, message
        for needle in needles:
            assert needle in message, message


def test_scenario_names_resolve_through_the_shipped_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the installed tool works from any directory
    assert load_scenario(SERVER).name == SERVER
    assert load_scenario(f"{SERVER}.yaml").name == SERVER
    with pytest.raises(InputError, match=r"unknown scenario 'llama2-70b-1m-mi355x-sever'.*did you mean"):
        load_scenario("llama2-70b-1m-mi355x-sever")
    with pytest.raises(InputError, match=r"scenario file 'nowhere/x\.yaml' not found"):
        load_scenario("nowhere/x.yaml")


def test_token_specs_hit_their_mean(tmp_path):
    rng = np.random.default_rng(1)
    sc = load_scenario(SERVER, ["workload.output_tokens.mean_tokens=400"])
    empirical = length_distribution(sc.workload.output_tokens)
    assert empirical.mean_tokens == pytest.approx(400, rel=0.005)
    lognormal = load_scenario("gpt-oss-120b-1m-mi355x").workload.output_tokens
    draws = length_distribution(lognormal).sample(200_000, rng)
    assert draws.mean() == pytest.approx(lognormal.mean_tokens, rel=0.02)
    assert draws.max() <= lognormal.max_tokens
    # a user token file, relative to the scenario file
    (tmp_path / "lengths.csv").write_text("input_length,output_length\n100,10\n300,30\n")
    raw = yaml.safe_load((scenarios_dir() / f"{SERVER}.yaml").read_text())
    raw["workload"] = {
        "input_tokens": {"kind": "empirical", "path": "lengths.csv", "column": "input_length"},
        "output_tokens": {"kind": "empirical", "path": "lengths.csv", "column": "output_length"},
    }
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(raw))
    own = load_scenario(tmp_path / "own.yaml")
    assert own.workload.length_model().mean_output_tokens == pytest.approx(20.0)
    assert own.workload.length_model().paired


def test_json_schema_describes_the_file_format():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert {"model", "workload", "slo", "target", "hardware", "layouts", "costs", "simulation"} <= set(
        schema["properties"])
    text = str(schema)
    assert "mlperf-server" in text and "mean_tokens" in text and "fidelity" in text


def test_overrides_and_grids_parse_yaml_values():
    assert parse_override("layouts.tp=[1, 2]") == (("layouts", "tp"), [1, 2])
    assert parse_override("costs=") == (("costs",), None)
    assert parse_override("target.output_tokens_per_s=2e6") == (("target", "output_tokens_per_s"), 2e6)
    assert parse_override("hardware=h100") == (("hardware",), "h100")
    assert parse_grid("slo.tpot_p99_ms=40,80") == (("slo", "tpot_p99_ms"), [40, 80])
    assert parse_grid("layouts.tp=[1,2],[4]") == (("layouts", "tp"), [[1, 2], [4]])
    with pytest.raises(InputError, match="--grid expects path=v1,v2"):
        parse_grid("slo.tpot_p99_ms")


def test_hash_is_stable_and_tracks_changes():
    raw, path = load_raw(SERVER)
    a, b = build_scenario(raw, where=path), build_scenario(raw, where=path)
    c = build_scenario(raw, [parse_override("simulation.seed=1")], where=path)
    assert scenario_hash(a) == scenario_hash(b) != scenario_hash(c)
    assert isinstance(a, Scenario)
