"""The MLPerf data layer: loading, deduplication, row -> ReplaySpec mapping, validation statistics."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from simulator import mlperf, units
from simulator.data import profiles_dir
from simulator.errors import InputError
from simulator.formats import NAMED_PRECISIONS

SHIPPED = profiles_dir() / "mlperf" / "results.csv"
DUP_NOTE = re.compile(r"identical result also reported under (\S+?)(?:;|$)")
# accelerator-column values whose hardware fleetsim profiles (mixed systems are made of profiled parts)
PROFILED_NAMES = {"H100", "H200", "B200", "B300", "GB200", "GB300", "MI300X", "MI325X", "MI350X", "MI355X",
                  "MIXED(MI325X+MI300X)"}


def _raw_rows(path: Path = SHIPPED) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in header} for r in rows)
    return path


@pytest.fixture(scope="module")
def rows() -> list[mlperf.ResultRow]:
    return mlperf.load_results()


@pytest.fixture(scope="module")
def deduped(rows: list[mlperf.ResultRow]) -> list[mlperf.ResultRow]:
    return mlperf.deduplicate(rows)


def _row(**overrides: object) -> dict[str, str]:
    base = {"version": "v5.1", "submitter": "Acme", "system_name": "Acme 8x H200", "accelerator": "H200",
            "accelerators_per_node": "8", "nodes": "1", "total_accelerators": "8",
            "benchmark": "llama2-70b-99", "scenario": "Server", "precision": "fp8",
            "framework": "TensorRT-LLM", "result_value": "30000", "result_unit": "tokens/s", "notes": ""}
    base.update({k: str(v) for k, v in overrides.items()})
    return base


# ------------------------------------------------------------------------------------------ loading

def test_shipped_csv_loads_every_row(rows: list[mlperf.ResultRow]) -> None:
    header, raw = _raw_rows()
    assert len(rows) == len(raw) > 0
    assert set(mlperf.DESCRIPTIVE_COLUMNS) <= set(header)
    for row, rec in zip(rows, raw, strict=True):
        assert row.benchmark == rec["benchmark"] and row.total_accelerators == int(rec["total_accelerators"])
        if rec["result_value"]:
            assert row.measured == pytest.approx(float(rec["result_value"]))
        # measured columns are kept apart from the descriptive ones
        assert "result_value" not in row.extra and "ttft_p99_ms" not in row.context


def test_default_path_is_the_shipped_copy() -> None:
    assert SHIPPED.is_file()
    assert len(mlperf.load_results(SHIPPED)) == len(mlperf.load_results())


@pytest.mark.parametrize("column", mlperf.DESCRIPTIVE_COLUMNS)
def test_missing_descriptive_column_is_an_input_error_naming_it(tmp_path: Path, column: str) -> None:
    header = [c for c in (*mlperf.DESCRIPTIVE_COLUMNS, "result_value") if c != column]
    path = _write_csv(tmp_path / "user.csv", header, [_row()])
    with pytest.raises(InputError) as info:
        mlperf.load_results(path)
    message = str(info.value)
    assert f"'{column}'" in message and "user.csv" in message and "\n" not in message


@pytest.mark.parametrize(("field", "value"), [("total_accelerators", "eight"), ("total_accelerators", "0"),
                                              ("nodes", "1.5"), ("result_value", "fast"), ("benchmark", "")])
def test_bad_values_are_input_errors_naming_the_column(tmp_path: Path, field: str, value: str) -> None:
    header = [*mlperf.DESCRIPTIVE_COLUMNS, "result_value"]
    path = _write_csv(tmp_path / "bad.csv", header, [_row(), _row(**{field: value})])
    with pytest.raises(InputError, match=rf"bad\.csv: line 3: column '{field}'"):
        mlperf.load_results(path)


def test_malformed_files_are_input_errors(tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(",".join(mlperf.DESCRIPTIVE_COLUMNS) + "\nv5.1,Acme\n", encoding="utf-8")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    for path in (ragged, empty, tmp_path / "absent.csv"):
        with pytest.raises(InputError, match=path.name):
            mlperf.load_results(path)


def test_user_csv_with_unknown_accelerator_and_version_gives_unsupported(tmp_path: Path) -> None:
    header = list(mlperf.DESCRIPTIVE_COLUMNS)  # no measured columns at all
    path = _write_csv(tmp_path / "mine.csv", header, [
        _row(accelerator="TPU v6e", version="v9.9"), _row(accelerator="H100-NVL"), _row(version="v7.0")])
    loaded = mlperf.load_results(path)
    assert [r.measured for r in loaded] == [None, None, None]
    specs = [mlperf.replay_spec(r) for r in loaded]
    assert isinstance(specs[0], mlperf.Unsupported) and "TPU v6e" in specs[0].reason
    assert isinstance(specs[1], mlperf.Unsupported) and "H100-NVL" in specs[1].reason
    assert isinstance(specs[2], mlperf.ReplaySpec) and specs[2].accelerator_id == "h200"
    assert [s[0] for s in mlperf.cv_splits_by_version(loaded)] == ["v7.0", "v9.9"]


# ------------------------------------------------------------------------------------------ dedup

def test_dedup_removes_exactly_the_pairs_flagged_in_notes(rows, deduped) -> None:
    _, raw = _raw_rows()
    flagged = [i for i, r in enumerate(raw) if DUP_NOTE.search(r["notes"])]
    same = ("version", "submitter", "system_name", "platform", "scenario", "result_value")
    pairs = set()
    for i in flagged:
        other = DUP_NOTE.search(raw[i]["notes"]).group(1)
        partners = [j for j in flagged if raw[j]["benchmark"] == other
                    and all(raw[j][k] == raw[i][k] for k in same)]
        assert len(partners) == 1, f"flagged row {i} has no unique identical partner"
        pairs.add(frozenset((i, partners[0])))
    assert len(pairs) * 2 == len(flagged)
    print(f"\nMLPerf rows: {len(rows)}; flagged -99/-99.9 pairs: {len(pairs)}; after dedup: {len(deduped)}")
    assert len(deduped) == len(rows) - len(pairs)
    # nothing identical is left behind
    keys = Counter((r.version, r.submitter, r.system_name, r.platform, r.scenario, r.measured,
                    re.sub(r"-99(\.9)?$", "", r.benchmark)) for r in deduped if r.measured is not None)
    assert max(keys.values()) == 1


def test_dedup_maps_v50_interactive_benchmark(rows, deduped) -> None:
    raw_interactive = [r for r in rows if "interactive" in r.benchmark]
    assert raw_interactive
    mapped = [r for r in deduped if "mapped to" in r.notes]
    assert len(mapped) == len(raw_interactive)
    assert all("interactive" not in r.benchmark for r in deduped)
    for before, after in zip(raw_interactive, mapped, strict=True):
        assert after.scenario == ("Interactive" if before.scenario == "Server" else before.scenario)
        assert after.measured == before.measured


def test_dedup_rule_on_hand_made_rows(tmp_path: Path) -> None:
    header = [*mlperf.DESCRIPTIVE_COLUMNS, "result_value", "notes", "platform"]
    path = _write_csv(tmp_path / "d.csv", header, [
        _row(benchmark="llama2-70b-99"), _row(benchmark="llama2-70b-99.9"),            # same value: one run
        _row(benchmark="llama2-70b-99", scenario="Offline", result_value="100"),
        _row(benchmark="llama2-70b-99.9", scenario="Offline", result_value="101"),     # different: keep
        _row(benchmark="llama2-70b-99", scenario="Interactive", result_value="",
             notes="identical result also reported under llama2-70b-99.9"),
        _row(benchmark="llama2-70b-99.9", scenario="Interactive", result_value=""),     # note: one run
        _row(benchmark="llama2-70b-99", system_name="Other", result_value="30000"),     # other system: keep
    ])
    kept = mlperf.deduplicate(mlperf.load_results(path))
    assert [(r.benchmark, r.scenario, r.system_name) for r in kept] == [
        ("llama2-70b-99", "Server", "Acme 8x H200"), ("llama2-70b-99", "Offline", "Acme 8x H200"),
        ("llama2-70b-99.9", "Offline", "Acme 8x H200"), ("llama2-70b-99", "Interactive", "Acme 8x H200"),
        ("llama2-70b-99", "Server", "Other")]


# ------------------------------------------------------------------------------------- replay specs

def test_every_row_maps_or_has_a_reason_and_coverage_is_high(rows, deduped) -> None:
    for label, subset in (("all rows", rows), ("deduplicated", deduped)):
        outcome: Counter[tuple[str, bool]] = Counter()
        reasons: Counter[str] = Counter()
        for row in subset:
            spec = mlperf.replay_spec(row)
            assert isinstance(spec, (mlperf.ReplaySpec, mlperf.Unsupported))
            if isinstance(spec, mlperf.Unsupported):
                assert spec.reason.strip()
                reasons[spec.reason] += 1
            outcome[row.accelerator, isinstance(spec, mlperf.ReplaySpec)] += 1
        profiled = sum(n for (acc, _), n in outcome.items() if acc in PROFILED_NAMES)
        mapped = sum(n for (acc, ok), n in outcome.items() if acc in PROFILED_NAMES and ok)
        print(f"\n{label}: {mapped}/{profiled} rows on profiled accelerators map "
              f"({mapped / profiled:.1%}); unsupported reasons: {dict(reasons)}")
        assert mapped / profiled >= 0.9
        # rows on unprofiled accelerators are never silently mapped
        assert all(not ok for (acc, ok) in outcome if acc not in PROFILED_NAMES)


def test_replay_specs_are_well_formed(deduped) -> None:
    specs = [s for s in map(mlperf.replay_spec, deduped) if isinstance(s, mlperf.ReplaySpec)]
    assert specs
    for spec in specs:
        assert spec.accelerator_id in mlperf.ACCELERATOR_IDS and spec.model_id in mlperf.MODEL_IDS
        assert spec.scenario in mlperf.SCENARIOS and spec.precision in NAMED_PRECISIONS
        assert spec.framework_family in ("trtllm", "vllm", "sglang")
        assert sum(n for _, n in spec.parts) == spec.total_gpus
        assert spec.nodes * spec.gpus_per_node >= spec.total_gpus > 0
        assert spec.accelerator_id == max(spec.parts, key=lambda p: p[1])[0]
        if spec.scenario == "offline":
            assert spec.ttft_limit_s is None and spec.tpot_limit_s is None
        else:
            assert 0 < spec.tpot_limit_s < spec.ttft_limit_s < 10.0


def test_limits_come_from_rules_and_agree_with_the_logs(deduped) -> None:
    assert mlperf.slo_limits_s("llama2-70b", "interactive") == pytest.approx((0.45, 0.04))
    assert mlperf.slo_limits_s("deepseek-r1", "interactive") == pytest.approx((1.5, 0.015))
    assert mlperf.slo_limits_s("llama3.1-405b", "server") == pytest.approx((6.0, 0.175))
    assert mlperf.slo_limits_s("mixtral-8x7b", "offline") == (None, None)
    with pytest.raises(InputError):
        mlperf.slo_limits_s("mixtral-8x7b", "interactive")
    checked = 0
    for row in deduped:  # cross-check only: the spec never reads these measured columns
        spec = mlperf.replay_spec(row)
        logged = "ttft_constraint_ms" in row.extra
        if isinstance(spec, mlperf.ReplaySpec) and spec.scenario != "offline" and logged:
            assert spec.ttft_limit_s == pytest.approx(units.ms_to_s(row.extra["ttft_constraint_ms"]))
            assert spec.tpot_limit_s == pytest.approx(units.ms_to_s(row.extra["tpot_constraint_ms"]))
            checked += 1
    assert checked > 100


MEASURED_NOTE_CLAUSES = re.compile(r"(identical result also reported under \S+?|summary json unit label "
                                   r"'[^']*' corrected from log)(;|$)")


def _scrambled(rec: dict[str, str], k: int) -> dict[str, str]:
    out = dict(rec)
    for column in mlperf.MEASURED_COLUMNS:
        if column in out:
            out[column] = "" if k % 3 == 0 else ("garbage" if column in ("accuracy", "result_unit")
                                                 else str(7.5 * (k + 1)))
    out["notes"] = MEASURED_NOTE_CLAUSES.sub("", out["notes"])
    return out


def test_replay_spec_ignores_measured_columns(tmp_path: Path, rows) -> None:
    header, raw = _raw_rows()
    altered = mlperf.load_results(_write_csv(tmp_path / "altered.csv", header,
                                             [_scrambled(r, k) for k, r in enumerate(raw)]))
    kept = [c for c in header if c not in mlperf.MEASURED_COLUMNS]
    removed = mlperf.load_results(_write_csv(tmp_path / "removed.csv", kept, raw))
    assert all(r.measured is None and not r.extra for r in removed)
    for original, alt, rem in zip(rows, altered, removed, strict=True):
        expected = mlperf.replay_spec(original)
        assert mlperf.replay_spec(alt) == expected
        assert mlperf.replay_spec(rem) == expected
        assert mlperf.replay_spec(replace(original, measured=-1.0, measured_unit="?", extra={})) == expected


def _spec(**overrides: object) -> mlperf.ReplaySpec | mlperf.Unsupported:
    fields = {"version": "v5.1", "submitter": "Acme", "system_name": "Acme box", "accelerator": "H200",
              "accelerators_per_node": 8, "nodes": 1, "total_accelerators": 8, "benchmark": "llama2-70b-99",
              "scenario": "Server", "precision": "fp8", "framework": "TensorRT-LLM", "measured": 1.0,
              "measured_unit": "tokens/s"}
    fields.update(overrides)
    return mlperf.replay_spec(mlperf.ResultRow(**fields))


def test_mapping_decisions() -> None:
    v50 = _spec(benchmark="llama2-70b-interactive-99.9", version="v5.0")
    assert v50.scenario == "interactive" and v50.model_id == "llama2-70b"
    assert v50.tpot_limit_s == pytest.approx(0.04)
    assert _spec(benchmark="llama2-70b-interactive-99", scenario="Offline").scenario == "offline"
    assert _spec(precision="MXFP4").precision == "fp4" and _spec(precision="UINT4").precision == "w4a16"
    assert _spec(precision="INT8").precision == "int8"
    assert _spec(precision="BF16/F32/F8_E4M3/U8").precision == "fp8"
    fp8_note = "NVIDIA v4.1 llama2/mixtral configs set use_fp8=True"
    assert _spec(precision="fp16", notes=fp8_note).precision == "fp8"
    assert _spec(precision="fp16", notes=fp8_note, accelerator="B200").precision == "fp4"
    assert _spec(precision="fp16").precision == "fp16"
    blanks = {a: _spec(precision="", accelerator=a).precision for a in ("H100", "B300", "MI325X", "MI355X")}
    assert blanks == {"H100": "fp8", "B300": "fp4", "MI325X": "fp8", "MI355X": "fp4"}
    assert isinstance(_spec(precision="fp3"), mlperf.Unsupported)
    dynamo = _spec(framework="TensorRT-LLM+Dynamo(listed)", benchmark="deepseek-r1", scenario="Interactive",
                   accelerator="GB300", total_accelerators=72, accelerators_per_node=4, nodes=18)
    assert (dynamo.framework_family, dynamo.disaggregated) == ("trtllm", True)
    assert dynamo.speculative_decoding_allowed
    assert dynamo.accelerator_id == "gb300-nvl72" and (dynamo.nodes, dynamo.gpus_per_node) == (18, 4)
    assert _spec(framework="vLLM+LLMBoost").framework_family == "vllm"
    assert _spec(framework="", accelerator="MI300X").framework_family == "vllm"
    assert _spec(framework="", accelerator="B200").framework_family == "trtllm"
    assert not _spec(benchmark="gpt-oss-120b", scenario="Server").speculative_decoding_allowed
    rack = _spec(accelerator="GB200", total_accelerators=72, accelerators_per_node=None, nodes=None)
    assert (rack.nodes, rack.gpus_per_node) == (18, 4)
    assert "vision" in _spec(benchmark="qwen3-vl-235b-a22b", accelerator="GB300").reason
    assert isinstance(_spec(benchmark="mixtral-8x7b", scenario="Interactive"), mlperf.Unsupported)
    for name in ("H100-NVL", "H100-PCIe", "H200-NVL", "GH200", "L40S", "RTX PRO 6000 Blackwell",
                 "Intel Arc Pro B60"):
        assert _spec(accelerator=name).reason.startswith(f"no profile for accelerator '{name}'")
    mixed = _spec(accelerator="MIXED(MI325X+MI300X)", total_accelerators=24, accelerators_per_node=8, nodes=3,
                  system_name="Supermicro (2x8x MI325X-256GB) and Supermicro (1x8x MI300X-192GB)")
    assert mixed.parts == (("mi325x", 16), ("mi300x", 8)) and mixed.accelerator_id == "mi325x"
    assert isinstance(_spec(accelerator="MIXED(MI325X+MI300X)", total_accelerators=25), mlperf.Unsupported)


# ------------------------------------------------------------------------------------------ statistics

def test_ape_pct() -> None:
    assert mlperf.ape_pct(200.0, 220.0) == pytest.approx(10.0)
    assert mlperf.ape_pct(200.0, 180.0) == pytest.approx(10.0)
    for bad in ((0.0, 1.0), (-5.0, 1.0), (1.0, math.inf), (math.nan, 1.0)):
        with pytest.raises(InputError):
            mlperf.ape_pct(*bad)


def test_summarize_errors_on_a_hand_made_list() -> None:
    rows = [{"accelerator": "h100" if k <= 5 else "b200", "scenario": "Server" if k % 2 else "Offline",
             "benchmark": "llama2-70b-99" if k <= 3 else "llama2-70b-99.9", "ape_pct": float(k)}
            for k in range(1, 11)]
    rows += [{"accelerator": "h100", "scenario": "Server", "model": "mixtral-8x7b", "unsupported": "why"},
             {"accelerator": "mi300x", "scenario": "Offline", "model": "llama2-70b", "ape_pct": None}]
    out = mlperf.summarize_errors(rows)
    # values 1..10: median 5.5, mean 5.5, linear p90 = 1 + 0.9 * 9 = 9.1
    assert out["median_ape_pct"] == pytest.approx(5.5) and out["mean_ape_pct"] == pytest.approx(5.5)
    assert out["p90_ape_pct"] == pytest.approx(9.1)
    assert out["coverage"] == pytest.approx(10 / 12) and out["n"] == 12
    assert out["overall"]["p90_ape_pct"] == pytest.approx(9.1)
    h100 = out["by_accelerator"]["h100"]  # 1..5 predicted, one unsupported
    assert h100["median_ape_pct"] == pytest.approx(3.0) and h100["coverage"] == pytest.approx(5 / 6)
    assert math.isnan(out["by_accelerator"]["mi300x"]["median_ape_pct"])
    assert out["by_accelerator"]["mi300x"]["coverage"] == 0.0
    assert out["by_model"]["llama2-70b"]["n"] == 11  # -99 and -99.9 are one model
    assert out["by_scenario"]["server"]["n_predicted"] == 5  # 1, 3, 5, 7, 9
    with pytest.raises(InputError, match="accelerator"):
        mlperf.summarize_errors([{"scenario": "Server", "model": "x", "ape_pct": 1.0}])


def test_cv_splits_by_version_are_forward_in_time(deduped) -> None:
    order = {v: k for k, v in enumerate(mlperf.VERSION_ORDER)}
    splits = mlperf.cv_splits_by_version(deduped)
    assert [s[0] for s in splits] == list(mlperf.VERSION_ORDER[1:])
    tested: set[int] = set()
    for version, train, test in splits:
        assert test and train and not set(train) & set(test)
        assert {deduped[i].version for i in test} == {version}
        assert all(order[deduped[i].version] < order[version] for i in train)
        assert set(train) == {i for i, r in enumerate(deduped) if order[r.version] < order[version]}
        tested |= set(test)
    assert tested == {i for i, r in enumerate(deduped) if r.version != "v4.0"}


def test_cv_splits_by_system_leave_one_system_out(deduped) -> None:
    splits = mlperf.cv_splits_by_system(deduped)
    assert len(splits) > 50
    seen: Counter[int] = Counter()
    for system, train, test in splits:
        assert {mlperf.system_key(deduped[i]) for i in test} == {system}
        assert system not in {mlperf.system_key(deduped[i]) for i in train}
        assert len(train) + len(test) == len(deduped)
        seen.update(test)
    assert set(seen) == set(range(len(deduped))) and max(seen.values()) == 1
    # blank system names fall back to the platform, so distinct v5.0 NVIDIA systems stay apart
    v50_nvidia = {mlperf.system_key(r) for r in deduped if r.version == "v5.0" and r.submitter == "NVIDIA"}
    assert len(v50_nvidia) >= 4


def test_cv_splits_by_scale_hold_out_every_larger_system(deduped) -> None:
    (label, train, test), = mlperf.cv_splits_by_scale(deduped)
    assert label == f"> {mlperf.SCALE_TRAIN_MAX_GPUS} accelerators"
    assert all(deduped[i].total_accelerators <= mlperf.SCALE_TRAIN_MAX_GPUS for i in train)
    assert all(deduped[i].total_accelerators > mlperf.SCALE_TRAIN_MAX_GPUS for i in test)
    assert sorted(train + test) == list(range(len(deduped)))
    assert {deduped[i].total_accelerators for i in test} >= {16, 72}   # clusters and NVL72 racks
    small = [deduped[i] for i in train]
    assert mlperf.cv_splits_by_scale(small) == []            # nothing larger to predict: no fold
    (_, train4, test4), = mlperf.cv_splits_by_scale(small, max_train_gpus=4)
    assert {small[i].total_accelerators for i in test4} == {
        r.total_accelerators for r in small if r.total_accelerators > 4}
    assert len(train4) + len(test4) == len(small)
