"""The estimate / hardware / models / simulate commands through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fleetsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd="/", timeout=120
    )


def test_estimate_json_h200_fp8_tp8():
    out = fleetsim(
        "estimate",
        "--model",
        "llama2-70b",
        "--hardware",
        "h200",
        "--precision",
        "fp8",
        "--tp",
        "8",
        "--batch",
        "64",
        "--input-tokens",
        "1024",
        "--output-tokens",
        "256",
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["fits"] is True
    assert r["weights_bytes_per_gpu"] == pytest.approx(69e9 / 8, rel=0.05)
    assert r["kv_capacity_tokens"] > 0 and r["largest_batch"] > 64
    assert 0 < r["single_request_tpot_s"] < r["decode_step_s"]
    for key in (
        "decode_step_s",
        "prefill_s",
        "single_request_ttft_s",
        "saturated_decode_output_tokens_per_s_per_gpu",
    ):
        assert r[key] > 0


def test_estimate_table_mi355x_fp4():
    out = fleetsim(
        "estimate",
        "--model",
        "llama2-70b",
        "--hardware",
        "mi355x",
        "--precision",
        "fp4",
        "--tp",
        "1",
        "--batch",
        "128",
        "--input-tokens",
        "222",
        "--output-tokens",
        "291",
    )
    assert out.returncode == 0, out.stderr
    assert "mxfp4" in out.stdout and "KV capacity" in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--hardware", "mi355y"], "unknown hardware 'mi355y'"),
        (["--model", "llama9"], "unknown model 'llama9'"),
        (["--precision", "fp9"], "unknown precision 'fp9'"),
        (["--batch", "0"], "--batch must be a positive integer"),
        (["--input-tokens", "-5"], "--input-tokens must be a positive integer"),
        (["--tp", "16"], "exceeds the h100 scale-up domain"),
        (["--model", "llama3.1-405b", "--precision", "bf16", "--tp", "1"], "does not fit on h100"),
        (["--batch", "x"], "Invalid value for '--batch'"),
    ],
)
def test_estimate_bad_input_is_one_line_exit_2(args, needle):
    base = {"--model": "llama2-70b", "--hardware": "h100", "--precision": "fp8"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [x for kv in base.items() for x in kv]
    out = fleetsim("estimate", *argv)
    assert out.returncode == 2
    assert needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_unknown_names_list_valid_choices():
    out = fleetsim("hardware", "show", "b201")
    assert out.returncode == 2 and "valid choices" in out.stderr and "b200" in out.stderr


def test_hardware_and_models_lists():
    hw = json.loads(fleetsim("hardware", "list", "--format", "json").stdout)
    assert {"mi355x", "b200", "vera-rubin-nvl72", "mi455x-helios"} <= {h["id"] for h in hw}
    models = json.loads(fleetsim("models", "list", "--format", "json").stdout)
    assert {m["id"] for m in models} >= {"llama2-70b", "deepseek-r1", "gpt-oss-120b"}


def test_simulate_json_contract_and_requests_out(tmp_path):
    out_file = tmp_path / "req.parquet"
    out = fleetsim(
        "simulate",
        "--model",
        "llama2-70b",
        "--hardware",
        "mi355x",
        "--precision",
        "fp4",
        "--replicas",
        "2",
        "--rate",
        "20",
        "--duration",
        "60",
        "--slo",
        "mlperf-server",
        "--format",
        "json",
        "--requests-out",
        str(out_file),
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for key in (
        "output_tokens_per_s",
        "ttft_p50_s",
        "ttft_p99_s",
        "tpot_p50_s",
        "tpot_p99_s",
        "e2e_p99_s",
        "completed_requests",
        "saturated",
        "slo_attainment",
        "model",
        "hardware",
        "replicas",
        "seed",
    ):
        assert key in r
    assert r["saturated"] is False and r["slo_attainment"] > 0.99
    import pyarrow.parquet as pq

    table = pq.read_table(out_file)
    assert table.num_rows == r["num_requests"]
    assert table.schema.field("ttft_s").metadata == {b"unit": b"s"}


def test_simulate_saturated_is_exit_0():
    out = fleetsim(
        "simulate",
        "--model",
        "llama2-70b",
        "--hardware",
        "h100",
        "--precision",
        "fp8",
        "--tp",
        "8",
        "--rate",
        "400",
        "--duration",
        "30",
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["saturated"] is True


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rate", "-1"], "--rate must be > 0"),
        (["--rate", "1", "--router", "fastest"], "unknown router 'fastest'"),
        (["--rate", "1", "--requests-out", "/nonexistent/x.parquet"], "does not exist"),
        (["--rate", "1", "--requests-out", "x.xlsx"], "unknown suffix"),
        (["--rate", "1", "--target-tps", "5"], "exactly one of"),
    ],
)
def test_simulate_bad_input(args, needle):
    out = fleetsim(
        "simulate", "--model", "llama2-70b", "--hardware", "h100", "--precision", "fp8", "--tp", "8", *args
    )
    assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_estimate_states_the_calibrated_model_factor_sizing_applies():
    from simulator.efficiency import model_throughput_factor

    factor = model_throughput_factor("gpt-oss-120b")
    assert factor != 1.0  # the shipped calibration has a gpt-oss-120b factor
    res = fleetsim("estimate", "--model", "gpt-oss-120b", "--hardware", "mi355x", "--precision", "fp4")
    assert res.returncode == 0, res.stderr
    note = f"note: sizing multiplies throughput by x{factor:.2f}: calibrated gpt-oss-120b factor"
    assert note in res.stdout
    data = json.loads(fleetsim("estimate", "--model", "gpt-oss-120b", "--hardware", "mi355x", "--precision",
                               "fp4", "--format", "json").stdout)
    assert data["model_throughput_factor"] == pytest.approx(factor)


def test_estimate_with_speculative_decoding_reports_the_real_step_and_per_token_times():
    """--speculative: the decode step is the real verification step (tau tokens per sequence), TPOT and
    throughput are per emitted token; a model without a draft is a one-line error, exit 2."""
    base = ["estimate", "--model", "deepseek-r1", "--hardware", "b200", "--precision", "fp4", "--tp", "8",
            "--batch", "32", "--input-tokens", "1000", "--output-tokens", "3000", "--format", "json"]
    plain = json.loads(fleetsim(*base).stdout)
    spec = json.loads(fleetsim(*base, "--speculative").stdout)
    tau = spec["tokens_per_step"]
    assert plain["tokens_per_step"] == 1.0 and tau > 1.0 and spec["speculative"]
    assert spec["decode_output_tokens_per_s_per_gpu_at_batch"] == pytest.approx(
        32 * tau / spec["decode_step_s"] / 8)
    assert spec["single_request_tpot_s"] < plain["single_request_tpot_s"] / 2
    assert spec["weights_bytes_per_gpu"] > plain["weights_bytes_per_gpu"]
    bad = fleetsim("estimate", "--model", "llama2-70b", "--hardware", "h200", "--precision", "fp8",
                   "--speculative")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no speculative decoding" in bad.stderr
