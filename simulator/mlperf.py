"""Measured MLPerf Inference results: load, deduplicate, map each row to simulator inputs, score predictions.

Data: ``hardware_profiles/mlperf/results.csv`` (provenance and column meanings in the README beside it).
Pure Python + numpy; no simulation here.

Invariants:
- A ``ReplaySpec`` is derived ONLY from the descriptive columns (``DESCRIPTIVE_COLUMNS``) plus one
  configuration fact read from ``notes`` (declared fp16 but "use_fp8=True" / FP8 enabled). Measured
  columns (result, latencies, target QPS, the constraint columns of the log, accuracy) are kept apart in
  ``ResultRow.measured`` / ``ResultRow.extra`` and never read by ``replay_spec``.
- TTFT/TPOT limits come from the rules table (rules.md section 3), converted to seconds.
- Every row either maps to a ``ReplaySpec`` or gets an ``Unsupported`` with a reason: nothing is dropped.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from simulator import units
from simulator.data import profiles_dir
from simulator.errors import InputError
from simulator.models import load_model

DESCRIPTIVE_COLUMNS = ("version", "submitter", "system_name", "accelerator", "accelerators_per_node", "nodes",
                       "total_accelerators", "benchmark", "scenario", "precision", "framework")
# Columns that must also be non-blank in every row.
_REQUIRED_VALUES = ("version", "accelerator", "total_accelerators", "benchmark", "scenario")
# What a run measured (or the log's test settings): kept out of every prediction input.
MEASURED_COLUMNS = ("result_value", "result_unit", "samples_per_s", "derived_output_tokens_per_sample",
                    "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "ttft_mean_ms",
                    "tpot_mean_ms", "target_qps", "ttft_constraint_ms", "tpot_constraint_ms",
                    "min_duration_ms", "accuracy")

ACCELERATOR_IDS = ("h100", "h200", "b200", "b300", "gb200-nvl72", "gb300-nvl72",
                   "mi300x", "mi325x", "mi350x", "mi355x")
MODEL_IDS = ("llama2-70b", "llama3.1-8b", "llama3.1-405b", "mixtral-8x7b", "gpt-oss-120b", "deepseek-r1")
SCENARIOS = ("offline", "server", "interactive")
VERSION_ORDER = ("v4.0", "v4.1", "v5.0", "v5.1", "v6.0")  # for messages; ordering is numeric (_version_key)


@dataclass(frozen=True)
class ResultRow:
    """One measured result. Descriptive columns first; measured columns kept separately.

    ``measured`` is ``result_value`` (output tokens/s for the text LLMs) or None when absent;
    ``extra`` holds the other measured columns (floats where numeric), never used for prediction.
    Additions to the brief: ``platform`` (system identity when ``system_name`` is blank), ``notes``,
    ``context`` (remaining non-measured columns, e.g. software_stack, source) and ``source_line``.
    """

    version: str
    submitter: str
    system_name: str
    accelerator: str
    accelerators_per_node: int | None
    nodes: int | None
    total_accelerators: int
    benchmark: str
    scenario: str
    precision: str
    framework: str
    measured: float | None
    measured_unit: str
    extra: dict = field(default_factory=dict)
    platform: str = ""
    notes: str = ""
    context: dict = field(default_factory=dict)
    source_line: int = 0


@dataclass(frozen=True)
class ReplaySpec:
    """What the simulator needs to predict one row, derived only from its descriptive columns.

    ``parts`` lists (accelerator id, GPU count); one entry unless the system mixes accelerators, in which
    case ``accelerator_id`` is the part with most GPUs. Limits are p99 targets in seconds (None offline).
    ``gpus_per_node`` is the physical node (a GB200/GB300 compute tray holds 4; the NVLink domain is the
    rack).
    ``speculative_decoding_allowed`` (addition): the rules allow speculative decoding for this
    benchmark+scenario, so the measured result may include it.
    """

    accelerator_id: str
    parts: tuple[tuple[str, int], ...]
    model_id: str
    scenario: str
    ttft_limit_s: float | None
    tpot_limit_s: float | None
    precision: str
    framework_family: str
    total_gpus: int
    nodes: int
    gpus_per_node: int
    disaggregated: bool
    notes: tuple[str, ...]
    speculative_decoding_allowed: bool = False
    version: str = ""  # the MLPerf round (software of that round); selects a round's model factor


@dataclass(frozen=True)
class Unsupported:
    """A row the simulator cannot replay, and why."""

    reason: str


# --------------------------------------------------------------------------------------------- loading

def _cell(value: str | None) -> str:
    return (value or "").strip()


def _short(value: str) -> str:
    text = value.replace("\n", " ")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _parse_int(value: str, where: str, column: str, *, required: bool) -> int | None:
    if not value:
        if required:
            raise InputError(f"{where}: column '{column}' is blank (a positive integer is required)")
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number == int(number) and number > 0):
        raise InputError(f"{where}: column '{column}' must be a positive integer, got {_short(value)}")
    return int(number)


def _parse_float(value: str, where: str, column: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{where}: column '{column}' must be a number, got {_short(value)}") from None


def load_results(path: str | Path | None = None) -> list[ResultRow]:
    """Read an MLPerf results CSV (default: the shipped ``hardware_profiles/mlperf/results.csv``).

    Every descriptive column must exist; measured columns are optional (a user CSV describing systems
    to predict may leave them out). Unknown accelerators/versions load fine (``replay_spec`` decides).
    Raises ``InputError`` (one line naming the file, and line/column where known) on a malformed file.
    """
    csv_path = Path(path) if path is not None else profiles_dir() / "mlperf" / "results.csv"
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = [h.strip() for h in next(reader, [])]
            if not any(header):
                raise InputError(f"{csv_path}: empty file (expected a CSV header with "
                                 f"{', '.join(DESCRIPTIVE_COLUMNS)})")
            missing = [c for c in DESCRIPTIVE_COLUMNS if c not in header]
            if missing:
                raise InputError(f"{csv_path}: missing column '{missing[0]}' "
                                 f"(required columns: {', '.join(DESCRIPTIVE_COLUMNS)})")
            rows = [_make_row(dict(zip(header, rec, strict=True)), f"{csv_path}: line {reader.line_num}",
                              reader.line_num)
                    for rec in _records(reader, header, csv_path)]
    except OSError as exc:
        raise InputError(f"cannot read MLPerf results file {csv_path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{csv_path}: malformed CSV ({str(exc).splitlines()[0]})") from None
    return rows


def _records(reader: Any, header: list[str], csv_path: Path) -> Iterable[list[str]]:
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise InputError(f"{csv_path}: line {reader.line_num}: {len(record)} fields but the header has "
                             f"{len(header)}")
        yield record


def _make_row(raw: dict[str, str], where: str, line: int) -> ResultRow:
    values = {c: _cell(raw.get(c)) for c in DESCRIPTIVE_COLUMNS}
    for column in _REQUIRED_VALUES:
        if not values[column]:
            raise InputError(f"{where}: column '{column}' is blank")
    extra: dict[str, float | str] = {}
    for column in MEASURED_COLUMNS[2:]:
        text = _cell(raw.get(column))
        if text:
            try:
                extra[column] = float(text)
            except ValueError:
                extra[column] = text
    taken = {*DESCRIPTIVE_COLUMNS, *MEASURED_COLUMNS, "platform", "notes"}
    return ResultRow(
        version=values["version"], submitter=values["submitter"], system_name=values["system_name"],
        accelerator=values["accelerator"],
        accelerators_per_node=_parse_int(values["accelerators_per_node"], where, "accelerators_per_node",
                                         required=False),
        nodes=_parse_int(values["nodes"], where, "nodes", required=False),
        total_accelerators=_parse_int(values["total_accelerators"], where, "total_accelerators",
                                      required=True) or 0,
        benchmark=values["benchmark"], scenario=values["scenario"], precision=values["precision"],
        framework=values["framework"],
        measured=_parse_float(_cell(raw.get("result_value")), where, "result_value"),
        measured_unit=_cell(raw.get("result_unit")), extra=extra,
        platform=_cell(raw.get("platform")), notes=_cell(raw.get("notes")),
        context={k: _cell(v) for k, v in raw.items() if k not in taken and _cell(v)}, source_line=line,
    )


def system_key(row: ResultRow | Mapping[str, Any]) -> str:
    """Identity of a system: 'submitter / system_name' (the platform id when system_name is blank)."""
    name = _get(row, "system_name") or _get(row, "platform")
    return f"{_get(row, 'submitter')} / {name}"


# ----------------------------------------------------------------------------------------- dedup

_DUP_NOTE = re.compile(r"identical result also reported under\s+([\w.\-]+[\w])", re.IGNORECASE)
_ACCURACY_SUFFIX = re.compile(r"-99(?:\.9)?$")


def _map_interactive_benchmark(row: ResultRow) -> ResultRow:
    """v5.0 'llama2-70b-interactive-99(.9)' -> 'llama2-70b-99(.9)'; its Server run -> Interactive."""
    if "-interactive" not in row.benchmark.lower():
        return row
    benchmark = re.sub("-interactive", "", row.benchmark, flags=re.IGNORECASE)
    scenario = "Interactive" if row.scenario.lower() == "server" else row.scenario
    note = f"benchmark {row.benchmark} {row.scenario} mapped to {benchmark} {scenario}"
    notes = "; ".join(filter(None, (row.notes, note)))
    return replace(row, benchmark=benchmark, scenario=scenario, notes=notes)


def deduplicate(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """One row per run, in file order.

    Maps v5.0 ``llama2-70b-interactive-*`` rows first (Server -> Interactive). Then two rows are one run
    when they share version, submitter, system_name, platform, accelerator, GPU count and scenario, their
    benchmarks differ only in the accuracy suffix (-99 vs -99.9), and either their results are identical
    or (when a result is missing) a notes column says "identical result also reported under <other>".
    The first row in file order is kept, with a note naming the dropped benchmark.
    """
    kept: list[ResultRow] = []
    index: dict[tuple, list[int]] = {}
    for original in rows:
        row = _map_interactive_benchmark(original)
        family = _ACCURACY_SUFFIX.sub("", row.benchmark.lower())
        key = (row.version, row.submitter, row.system_name, row.platform, row.accelerator,
               row.total_accelerators, row.scenario.lower(), family)
        duplicate_of = next((i for i in index.get(key, []) if _same_run(kept[i], row)), None)
        if duplicate_of is None:
            index.setdefault(key, []).append(len(kept))
            kept.append(row)
        else:
            first = kept[duplicate_of]
            note = f"deduplicated: same run also reported under {row.benchmark}"
            kept[duplicate_of] = replace(first, notes="; ".join(filter(None, (first.notes, note))))
    return kept


def _same_run(a: ResultRow, b: ResultRow) -> bool:
    if a.benchmark.lower() == b.benchmark.lower():
        return False
    if a.measured is not None and b.measured is not None:
        return a.measured == b.measured
    named = {m.lower() for m in _DUP_NOTE.findall(a.notes)} | {m.lower() for m in _DUP_NOTE.findall(b.notes)}
    return bool(named & {a.benchmark.lower(), b.benchmark.lower()})


# ------------------------------------------------------------------------------------ replay mapping

_NO_PROFILE: tuple[tuple[str, str], ...] = (  # (upper-case prefix, why) -- checked before the supported ids
    ("H100-NVL", "PCIe H100 NVL 94 GB card; fleetsim profiles only H100 SXM"),
    ("H100-PCIE", "PCIe H100 80 GB card; fleetsim profiles only H100 SXM"),
    ("H200-NVL", "PCIe H200 NVL card; fleetsim profiles only H200 SXM"),
    ("GH200", "Grace Hopper superchip"),
    ("L40S", "Ada Lovelace PCIe GPU"),
    ("RTX PRO", "RTX PRO Blackwell workstation/server card"),
    ("INTEL ARC", "Intel Arc Pro GPU"),
)
_SUPPORTED_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), accel) for pattern, accel in (
        (r"^H100(-SXM[\w-]*)?$", "h100"), (r"^H200(-SXM[\w-]*)?$", "h200"),
        (r"^B200(-SXM[\w-]*)?$", "b200"), (r"^B300(-SXM[\w-]*)?$", "b300"),
        (r"^GB200([- ]?NVL\d*)?$", "gb200-nvl72"), (r"^GB300([- ]?NVL\d*)?$", "gb300-nvl72"),
        (r"^MI300X([- ].*)?$", "mi300x"), (r"^MI325X([- ].*)?$", "mi325x"),
        (r"^MI350X([- ].*)?$", "mi350x"), (r"^MI355X([- ].*)?$", "mi355x"),
    )
)
_VENDOR = {a: ("amd" if a.startswith("mi") else "nvidia") for a in ACCELERATOR_IDS}
# Usual precision when a row declares none: Hopper fp8, Blackwell fp4, CDNA3 fp8, CDNA4 fp4.
_GENERATION_PRECISION = {"h100": "fp8", "h200": "fp8", "b200": "fp4", "b300": "fp4", "gb200-nvl72": "fp4",
                         "gb300-nvl72": "fp4", "mi300x": "fp8", "mi325x": "fp8", "mi350x": "fp4",
                         "mi355x": "fp4"}
_RACK_SCALE = ("gb200-nvl72", "gb300-nvl72")
_TRAY_GPUS = 4      # GPUs per GB200/GB300 compute tray
_BOARD_GPUS = 8     # GPUs per HGX / OAM baseboard

_UNSUPPORTED_BENCHMARKS = {
    "qwen3-vl-235b-a22b": "qwen3-vl-235b-a22b: vision-language benchmark (metric samples/s, end-to-end "
                          "latency limit, needs the vision encoder) is not modelled",
}
# p99 (TTFT, TPOT) limits in ms, rules.md section 3 (mlperf.conf; gpt-oss Interactive TPOT 15 ms as in
# every v6.0 log, the policy text says 20 ms).
_SLO_LIMITS_MS: dict[tuple[str, str], tuple[float, float]] = {
    ("llama2-70b", "server"): (2000.0, 200.0), ("llama2-70b", "interactive"): (450.0, 40.0),
    ("mixtral-8x7b", "server"): (2000.0, 200.0),
    ("llama3.1-405b", "server"): (6000.0, 175.0), ("llama3.1-405b", "interactive"): (4500.0, 80.0),
    ("llama3.1-8b", "server"): (2000.0, 100.0), ("llama3.1-8b", "interactive"): (500.0, 30.0),
    ("deepseek-r1", "server"): (2000.0, 80.0), ("deepseek-r1", "interactive"): (1500.0, 15.0),
    ("gpt-oss-120b", "server"): (3000.0, 80.0), ("gpt-oss-120b", "interactive"): (2000.0, 15.0),
}

_PRECISION_ALIASES = {
    "fp4": "fp4", "mxfp4": "fp4", "nvfp4": "fp4", "fp8": "fp8", "f8_e4m3": "fp8", "e4m3": "fp8",
    "int8": "int8", "bf16": "bf16", "fp16": "fp16", "f16": "fp16", "uint4": "w4a16", "int4": "w4a16",
    "w4a16": "w4a16", "w4a8": "w4a8", "fp6": "fp6", "mxfp6": "fp6", "fp32": "bf16", "f32": "bf16",
}
_NARROW_FIRST = ("fp4", "w4a8", "w4a16", "fp6", "fp8", "int8", "fp16", "bf16")
_FP8_ENABLED = re.compile(r"use_fp8\s*=\s*true|fp8 (?:was |is )?enabled", re.IGNORECASE)
_BENCHMARK_RE = re.compile(r"^(?P<base>.+?)(?P<interactive>-interactive)?(?P<accuracy>-99(?:\.9)?)?$")


def slo_limits_s(model_id: str, scenario: str) -> tuple[float | None, float | None]:
    """(TTFT, TPOT) p99 limits in seconds from the rules table; (None, None) for Offline.

    Raises ``InputError`` if the rules define no limits for that model and scenario.
    """
    if scenario == "offline":
        return None, None
    if (model_id, scenario) not in _SLO_LIMITS_MS:
        raise InputError(f"MLPerf rules define no {scenario} latency limits for {model_id}; valid: "
                         f"{', '.join(f'{m}/{s}' for m, s in _SLO_LIMITS_MS)}")
    ttft_ms, tpot_ms = _SLO_LIMITS_MS[model_id, scenario]
    return units.ms_to_s(ttft_ms), units.ms_to_s(tpot_ms)


def accelerator_id(name: str) -> str | Unsupported:
    """fleetsim hardware id for one accelerator name from the CSV, or why there is none."""
    upper = " ".join(name.strip().upper().split())
    for prefix, why in _NO_PROFILE:
        if upper.startswith(prefix):
            return Unsupported(f"no profile for accelerator '{name}' ({why})")
    for pattern, accel in _SUPPORTED_PATTERNS:
        if pattern.match(upper):
            return accel
    return Unsupported(f"no profile for accelerator '{name}' (unknown to fleetsim; profiled: "
                       f"{', '.join(ACCELERATOR_IDS)})")


def _map_parts(row: ResultRow) -> tuple[tuple[tuple[str, int], ...], list[str]] | Unsupported:
    mixed = re.fullmatch(r"MIXED\((.*)\)", row.accelerator.strip(), flags=re.IGNORECASE)
    if not mixed:
        accel = accelerator_id(row.accelerator)
        return accel if isinstance(accel, Unsupported) else (((accel, row.total_accelerators),), [])
    parts: list[tuple[str, int]] = []
    for name in (p.strip() for p in mixed.group(1).split("+")):
        accel = accelerator_id(name)
        if isinstance(accel, Unsupported):
            return Unsupported(f"mixed system with an unprofiled part: {accel.reason}")
        pattern = r"(?:(\d+)\s*x\s*)?(\d+)\s*x\s*" + re.escape(name) + r"(?![0-9A-Za-z])"
        counts = re.findall(pattern, row.system_name, flags=re.IGNORECASE)
        parts.append((accel, sum(int(a or 1) * int(b) for a, b in counts)))
    if any(n == 0 for _, n in parts) or sum(n for _, n in parts) != row.total_accelerators:
        return Unsupported(f"mixed system '{row.accelerator}': per-accelerator counts in system_name do not "
                           f"add up to total_accelerators {row.total_accelerators}")
    return tuple(parts), [f"mixed system {'+'.join(f'{n}x{a}' for a, n in parts)}; accelerator_id is the "
                          "part with most GPUs"]


def _map_benchmark(benchmark: str) -> tuple[str, bool] | Unsupported:
    name = benchmark.strip().lower().replace("llama3_1", "llama3.1")
    if name in _UNSUPPORTED_BENCHMARKS:
        return Unsupported(_UNSUPPORTED_BENCHMARKS[name])
    match = _BENCHMARK_RE.match(name)
    if not match or match.group("base") not in MODEL_IDS:
        return Unsupported(f"unknown benchmark '{benchmark}' (modelled: {', '.join(MODEL_IDS)})")
    return match.group("base"), match.group("interactive") is not None


def _map_precision(declared: str, notes: str, accel: str) -> tuple[str, list[str]] | Unsupported:
    text = declared.strip().lower()
    if not text:
        default = _GENERATION_PRECISION[accel]
        return default, [f"precision blank; assumed {default} (usual for {accel})"]
    usual = _GENERATION_PRECISION[accel]
    if text == "fp16" and _FP8_ENABLED.search(notes):
        # NVIDIA v4.1: the measurement JSON says fp16 but the configs quantise to FP8; the v4.1 Blackwell
        # preview was NVIDIA's first FP4 submission, so a generation whose usual format is narrower keeps it.
        chosen = min(("fp8", usual), key=_NARROW_FIRST.index)
        why = "" if chosen == "fp8" else f" ({chosen} on {accel}: NVIDIA's v4.1 Blackwell preview ran FP4)"
        return chosen, [f"declared fp16, but the notes say the configs enable FP8; using {chosen}{why}"]
    tokens = [t for t in re.split(r"[/,+\s]+", text) if t]
    known = [_PRECISION_ALIASES[t] for t in tokens if t in _PRECISION_ALIASES]
    if not known:
        known_names = ", ".join(sorted(_PRECISION_ALIASES))
        return Unsupported(f"unrecognised precision '{declared}' (known: {known_names})")
    chosen = min(known, key=_NARROW_FIRST.index)
    notes_out = [] if text == chosen else [f"declared precision '{declared}' mapped to {chosen}"]
    if len(tokens) > 1:
        notes_out.append("declared a list of data types; using the narrowest listed")
    if _NARROW_FIRST.index(chosen) > _NARROW_FIRST.index(usual):
        notes_out.append(f"declared {chosen}, wider than the usual {usual} on {accel}; kept as declared "
                         "(check for a mislabelled precision)")
    return chosen, notes_out


def _map_framework(framework: str, accel: str) -> tuple[str, bool, list[str]] | Unsupported:
    text = framework.strip().lower()
    disaggregated = "dynamo" in text
    notes = ["Dynamo listed: treated as disaggregated prefill/decode serving"] if disaggregated else []
    if "sglang" in text:
        family = "sglang"
    elif "tensorrt" in text or "trt" in text:
        family = "trtllm"
    elif "vllm" in text or "llmboost" in text:
        family = "vllm"
        if "llmboost" in text:
            notes.append("LLMBoost is vLLM-based")
    elif not text:
        family = "trtllm" if _VENDOR[accel] == "nvidia" else "vllm"
        notes.append(f"framework blank; assumed {family} (usual for {_VENDOR[accel]})")
    else:
        return Unsupported(f"unknown framework '{framework}' (known families: trtllm, vllm, sglang)")
    return family, disaggregated, notes


def _layout(row: ResultRow, accel: str) -> tuple[int, int, list[str]]:
    """(nodes, gpus_per_node) from the row; total_accelerators is authoritative."""
    total, per_node, nodes = row.total_accelerators, row.accelerators_per_node, row.nodes
    if per_node and nodes and per_node * nodes == total:
        return nodes, per_node, []
    if per_node and total % per_node == 0:
        return total // per_node, per_node, ["nodes derived from total_accelerators / accelerators_per_node"]
    if nodes and total % nodes == 0:
        return nodes, total // nodes, ["accelerators_per_node derived from total_accelerators / nodes"]
    if nodes:
        return nodes, math.ceil(total / nodes), [f"{total} GPUs do not divide over {nodes} nodes; "
                                                 "gpus_per_node rounded up"]
    default = min(total, _TRAY_GPUS if accel in _RACK_SCALE else _BOARD_GPUS)
    return math.ceil(total / default), default, [f"node layout not given; assumed {default} GPUs per node"]


def replay_spec(row: ResultRow) -> ReplaySpec | Unsupported:
    """Map one row to simulator inputs using only its descriptive columns (see module docstring)."""
    parts = _map_parts(row)
    if isinstance(parts, Unsupported):
        return parts
    part_list, notes = parts[0], list(parts[1])
    accel = max(part_list, key=lambda p: p[1])[0]
    bench = _map_benchmark(row.benchmark)
    if isinstance(bench, Unsupported):
        return bench
    model_id, interactive_variant = bench
    scenario = row.scenario.strip().lower()
    if scenario not in SCENARIOS:
        return Unsupported(f"unknown scenario '{row.scenario}' (valid: Offline, Server, Interactive)")
    if interactive_variant and scenario == "server":
        scenario = "interactive"
        notes.append(f"{row.benchmark} was a separate benchmark in v5.0; its Server run is the Interactive "
                     "scenario")
    if scenario != "offline" and (model_id, scenario) not in _SLO_LIMITS_MS:
        return Unsupported(f"MLPerf rules define no {scenario} latency limits for {model_id}")
    ttft_limit_s, tpot_limit_s = slo_limits_s(model_id, scenario)
    precision = _map_precision(row.precision, row.notes, accel)
    if isinstance(precision, Unsupported):
        return precision
    framework = _map_framework(row.framework, accel)
    if isinstance(framework, Unsupported):
        return framework
    nodes, gpus_per_node, layout_notes = _layout(row, accel)
    # where the rules allow it (rules.md section 2, POL line 765): the model file's speculative block
    drafts = load_model(model_id).speculative
    speculative = drafts is not None and drafts.allowed_in(scenario)
    if speculative:
        notes.append("rules allow speculative decoding here; the result may include it")
    if accel in _RACK_SCALE:
        notes.append("rack-scale NVLink domain: all GPUs of the system share one NVLink fabric")
    return ReplaySpec(
        accelerator_id=accel, parts=part_list, model_id=model_id, scenario=scenario,
        ttft_limit_s=ttft_limit_s, tpot_limit_s=tpot_limit_s, precision=precision[0],
        framework_family=framework[0], total_gpus=row.total_accelerators, nodes=nodes,
        gpus_per_node=gpus_per_node, disaggregated=framework[1],
        notes=(*notes, *precision[1], *framework[2], *layout_notes), speculative_decoding_allowed=speculative,
        version=row.version.strip(),
    )


# --------------------------------------------------------------------------------- validation stats

def ape_pct(measured: float, predicted: float) -> float:
    """Absolute percentage error |predicted - measured| / measured, in percent.

    Raises ``InputError`` unless measured is finite and > 0 and predicted is finite.
    """
    if not (math.isfinite(measured) and measured > 0):
        raise InputError(f"measured value must be a finite positive number, got {measured}")
    if not math.isfinite(predicted):
        raise InputError(f"predicted value must be finite, got {predicted}")
    return units.frac_to_pct(abs(predicted - measured) / measured)


def _get(row: Any, key: str, default: Any = "") -> Any:
    if isinstance(row, Mapping):
        return row.get(key, default)
    return getattr(row, key, default)


def _is_predicted(row: Mapping[str, Any]) -> bool:
    if row.get("unsupported"):
        return False
    value = row.get("ape_pct")
    return isinstance(value, (int, float)) and math.isfinite(value)


def _stats(rows: list[Mapping[str, Any]]) -> dict[str, float | int]:
    apes = np.asarray([float(r["ape_pct"]) for r in rows if _is_predicted(r)], dtype=float)
    nan = float("nan")
    out: dict[str, float | int] = {
        "n": len(rows), "n_predicted": int(apes.size),
        "coverage": apes.size / len(rows) if rows else nan,
        "median_ape_pct": float(np.median(apes)) if apes.size else nan,
        "mean_ape_pct": float(np.mean(apes)) if apes.size else nan,
        "p90_ape_pct": float(np.percentile(apes, 90)) if apes.size else nan,
    }
    within = [r["predicted_p05"] <= r["measured"] <= r["predicted_p95"] for r in rows
              if _is_predicted(r) and "predicted_p05" in r and "predicted_p95" in r]
    if within:
        out["within_interval"] = sum(within) / len(within)
    return out


def summary_model_key(row: Mapping[str, Any]) -> str:
    """The benchmark model a validation row is grouped under in ``summarize_errors``."""
    name = str(row.get("model") or row.get("model_id") or row.get("benchmark") or "")
    mapped = _map_benchmark(name)
    return name if isinstance(mapped, Unsupported) else mapped[0]


def summarize_errors(rows: list[dict]) -> dict:
    """Error statistics over validation rows.

    Each row: ``accelerator``, ``scenario``, ``model`` (or ``benchmark``), and ``ape_pct`` (a prediction)
    or a truthy ``unsupported``. Returns the overall ``n``, ``n_predicted``, ``coverage`` (predicted / given),
    ``median_ape_pct``, ``mean_ape_pct``, ``p90_ape_pct`` (numpy linear percentile; NaN when nothing was
    predicted), ``within_interval`` (share of predicted rows whose ``measured`` lies in
    [``predicted_p05``, ``predicted_p95``], when rows carry them), the same dict under ``overall``, and
    per-group dicts under ``by_accelerator``,
    ``by_scenario`` and ``by_model``.
    """
    for i, row in enumerate(rows):
        for key in ("accelerator", "scenario"):
            if key not in row:
                raise InputError(f"validation row {i} lacks '{key}' (needs accelerator, scenario, model, "
                                 "ape_pct)")
        if not any(k in row for k in ("model", "model_id", "benchmark")):
            raise InputError(f"validation row {i} lacks 'model' (or 'benchmark')")
    overall = _stats(list(rows))
    result: dict[str, Any] = {**overall, "overall": overall}
    for label, key_of in (("by_accelerator", lambda r: str(r["accelerator"])),
                          ("by_scenario", lambda r: str(r["scenario"]).lower()),
                          ("by_model", summary_model_key)):
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(key_of(row), []).append(row)
        result[label] = {k: _stats(v) for k, v in sorted(groups.items())}
    return result


Fold = tuple[str, list[int], list[int]]  # (held-out label, train indices, test indices)


def version_key(version: str) -> tuple[int, ...]:
    """Sortable key of an MLPerf round ('v5.1' -> (5, 1)); InputError when it has no number."""
    return _version_key(version)


def _version_key(version: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", version)
    if not numbers:
        raise InputError(f"cannot order MLPerf version '{version}'; expected e.g. {', '.join(VERSION_ORDER)}")
    return tuple(int(n) for n in numbers)


def cv_splits_by_version(rows: Sequence[ResultRow | Mapping[str, Any]]) -> list[Fold]:
    """Forward-in-time folds: (held-out version, train = rows of strictly older rounds, test = that round).

    Versions are ordered numerically (v4.0 < v4.1 < v5.0 < v5.1 < v6.0). The oldest round has no
    training data and gets no fold.
    """
    by_key: dict[tuple[int, ...], list[int]] = {}
    label: dict[tuple[int, ...], str] = {}
    for i, row in enumerate(rows):
        key = _version_key(str(_get(row, "version")))
        by_key.setdefault(key, []).append(i)
        label.setdefault(key, str(_get(row, "version")))
    splits = []
    for key in sorted(by_key):
        train = sorted(i for k, idx in by_key.items() if k < key for i in idx)
        if train:
            splits.append((label[key], train, by_key[key]))
    return splits


SCALE_TRAIN_MAX_GPUS = 8  # cv "scale": the largest single HGX / MI node; bigger systems are held out


def cv_splits_by_scale(rows: Sequence[ResultRow | Mapping[str, Any]],
                       max_train_gpus: int = SCALE_TRAIN_MAX_GPUS) -> list[Fold]:
    """Extrapolate in system size: one fold, train = rows of systems with at most ``max_train_gpus``
    accelerators, test = every larger system (multi-node clusters, NVL72 racks). No fold when either side
    is empty.
    """
    train = [i for i, row in enumerate(rows) if int(_get(row, "total_accelerators")) <= max_train_gpus]
    held = set(train)
    test = [i for i in range(len(rows)) if i not in held]
    return [(f"> {max_train_gpus} accelerators", train, test)] if train and test else []


def cv_splits_by_system(rows: Sequence[ResultRow | Mapping[str, Any]]) -> list[Fold]:
    """Leave-one-system-out folds: (system key, train = all other systems' rows, test = that system's rows).

    A system is ``system_key`` (submitter + system_name, or platform when the name is blank), across all
    versions. Folds follow first appearance; a lone system gets no fold (nothing to train on).
    """
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(system_key(row), []).append(i)
    splits = []
    for key, test in groups.items():
        held = set(test)
        train = [i for i in range(len(rows)) if i not in held]
        if train:
            splits.append((key, train, test))
    return splits
