"""Reading scenario files: YAML -> presets expanded -> ``--set`` overrides applied -> validated ``Scenario``.

Scenario names resolve as a path first, then through ``simulator.data.scenarios_dir()`` (with or without
``.yaml``), so the installed tool finds the shipped scenarios from any directory. Relative ``path``
entries of token-length files are resolved against the scenario file's folder. Every failure is an
``InputError`` with one line naming the file and the field.

Override paths are checked against the pydantic schema (not against the file), so a section the file
omits (``costs``) can still be set; an unknown key lists the valid keys at its level.
"""

from __future__ import annotations

import copy
import hashlib
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.data import scenarios_dir
from simulator.errors import InputError, unknown_name
from simulator.mlperf import slo_limits_s
from simulator.models import load_model
from simulator.scenario import (
    _EXCLUSIVE,
    _PRESET_PATHS,
    SLO_PRESETS,
    Scenario,
    SloSpec,
    TokenSpec,
    WorkloadSpec,
)
from simulator.units import s_to_ms
from simulator.workload import (
    EmpiricalLength,
    FixedLength,
    LogNormalLength,
    benchmark_workload,
    canonical_benchmark,
)

Override = tuple[tuple[str, ...], Any]
_TAGS = {"fixed", "lognormal", "empirical", "poisson", "gamma", "int", "float", "str", "list", "dict"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (a silent last-one-wins hides typos)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def list_scenarios() -> list[str]:
    """Names of the shipped scenarios (file stems in ``scenarios_dir()``)."""
    return sorted(p.stem for p in scenarios_dir().glob("*.yaml"))


def resolve_scenario_path(source: str | Path) -> Path:
    """A scenario path: as given if it exists, else a shipped scenario by name (``.yaml`` optional)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    name = str(source)
    for candidate in (scenarios_dir() / name, scenarios_dir() / f"{name}.yaml"):
        if "/" not in name and candidate.is_file():
            return candidate
    if "/" in name or name.endswith((".yaml", ".yml")):
        raise InputError(
            f"scenario file '{source}' not found; shipped scenarios: {', '.join(list_scenarios())}"
        )
    raise unknown_name("scenario", name, list_scenarios())


def load_raw(source: str | Path) -> tuple[dict[str, Any], Path]:
    """The YAML mapping of a scenario file (relative token-file paths made absolute) and its path."""
    path = resolve_scenario_path(source)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}: malformed YAML{where}: {_one_line(problem)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read scenario file {path}: {_one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a scenario file must be a YAML mapping (model:, workload:, slo:, ...)")
    workload = raw.get("workload")
    for key in ("input_tokens", "output_tokens"):
        spec = workload.get(key) if isinstance(workload, dict) else None
        if (
            isinstance(spec, dict)
            and isinstance(spec.get("path"), str)
            and not Path(spec["path"]).is_absolute()
        ):
            spec["path"] = str((path.parent / spec["path"]).resolve())
    return raw, path


_EXPONENT_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads '2e6' (no dot) as a string; on the command line it is meant as a number."""
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def parse_override(text: str) -> Override:
    """'a.b.c=value' -> (('a', 'b', 'c'), value parsed as a YAML scalar or flow list)."""
    if "=" not in text:
        raise InputError(f"--set expects path=value (e.g. slo.tpot_p99_ms=40), got '{text}'")
    key, _, value = text.partition("=")
    parts = tuple(p.strip() for p in key.strip().split("."))
    if not all(parts):
        raise InputError(f"--set '{text}': the path '{key}' has an empty part")
    try:
        return parts, _numbers(yaml.safe_load(value))
    except yaml.YAMLError as exc:
        raise InputError(f"--set '{text}': the value is not valid YAML ({_one_line(exc)})") from None


def parse_grid(text: str) -> tuple[tuple[str, ...], list[Any]]:
    """'a.b=v1,v2,[x,y]' -> (('a', 'b'), [v1, v2, [x, y]]) (the values form one YAML flow list)."""
    if "=" not in text:
        raise InputError(f"--grid expects path=v1,v2,... (e.g. slo.tpot_p99_ms=40,80), got '{text}'")
    key, _, value = text.partition("=")
    parts, _ = parse_override(f"{key}=")
    try:
        values = _numbers(yaml.safe_load(f"[{value}]"))
    except yaml.YAMLError as exc:
        raise InputError(f"--grid '{text}': the values are not a YAML list ({_one_line(exc)})") from None
    if not values:
        raise InputError(f"--grid '{text}': give at least one value")
    return parts, values


# --------------------------------------------------------------------------------------------- file schema
class SloPresetSpec(BaseModel):
    """An MLPerf latency preset (file format only: expanded into ``SloSpec`` when loaded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["mlperf-server", "mlperf-interactive"]
    ttft_p99_ms: float | None = Field(default=None, gt=0)
    tpot_p99_ms: float | None = Field(default=None, gt=0)


class WorkloadFileSpec(WorkloadSpec):
    """The file format of ``workload``: lengths may come from the ``benchmark`` preset."""

    input_tokens: TokenSpec | None = None
    output_tokens: TokenSpec | None = None


class ScenarioFile(Scenario):
    """The scenario file format before preset expansion (what ``fleetsim schema`` describes)."""

    workload: WorkloadFileSpec
    slo: SloSpec | SloPresetSpec


def json_schema() -> dict[str, Any]:
    """JSON Schema of scenario files (for editor autocompletion and validation)."""
    schema = ScenarioFile.model_json_schema()
    schema["title"] = "fleetsim scenario"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --------------------------------------------------------------------------------------------- presets
def _spec_of(dist: Any) -> dict[str, Any]:
    """A scenario token spec (plain dict) equivalent to a ``workload`` length distribution."""
    if isinstance(dist, FixedLength):
        return {"kind": "fixed", "tokens": dist.tokens}
    if isinstance(dist, LogNormalLength):
        return {
            "kind": "lognormal",
            "mean_tokens": round(dist.capped_mean_tokens, 1),
            "cv": dist.cv,
            "max_tokens": dist.max_tokens,
        }
    if isinstance(dist, EmpiricalLength):
        spec: dict[str, Any] = {"kind": "empirical", "column": dist.column}
        spec.update({"benchmark": dist.benchmark} if dist.benchmark else {"path": str(dist.path)})
        if dist.max_tokens is not None:
            spec["max_tokens"] = dist.max_tokens
        if dist.scale != 1.0:
            spec["mean_tokens"] = round(dist.mean_tokens, 1)
        return spec
    raise InputError(f"cannot express {type(dist).__name__} as a scenario token spec")


def expand_presets(raw: dict[str, Any], where: str | Path = "scenario") -> dict[str, Any]:
    """A copy of ``raw`` with ``workload.benchmark`` lengths and ``slo.preset`` limits written out."""
    doc = copy.deepcopy(raw)
    workload = doc.get("workload")
    bench = None
    if isinstance(workload, dict) and workload.get("benchmark") is not None:
        try:
            bench = canonical_benchmark(str(workload["benchmark"]))
            lengths = benchmark_workload(bench)
        except InputError as exc:
            raise InputError(f"{where}: workload.benchmark: {exc}") from None
        workload.setdefault("input_tokens", _spec_of(lengths.input_tokens))
        workload.setdefault("output_tokens", _spec_of(lengths.output_tokens))
    slo = doc.get("slo")
    if isinstance(slo, dict) and "preset" in slo:
        preset = slo.pop("preset")
        if preset not in SLO_PRESETS:
            raise InputError(f"{where}: slo.preset: {unknown_name('SLO preset', str(preset), SLO_PRESETS)}")
        try:
            bench = bench or load_model(str(doc.get("model"))).mlperf_benchmark
            ttft_s, tpot_s = slo_limits_s(canonical_benchmark(bench), SLO_PRESETS[preset])
        except InputError as exc:
            raise InputError(f"{where}: slo.preset: {exc}") from None
        slo.setdefault("ttft_p99_ms", s_to_ms(ttft_s))
        slo.setdefault("tpot_p99_ms", s_to_ms(tpot_s))
        slo.setdefault("source", f"{preset}: MLPerf {SLO_PRESETS[preset].capitalize()} limits for {bench}")
    return doc


# --------------------------------------------------------------------------------------------- overrides
def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [x for a in typing.get_args(annotation) for x in _flatten(a)]
    return [annotation]


def _submodel(annotation: Any, node: Any) -> type[BaseModel] | type[dict] | None:
    """The model a field holds (by ``kind`` in tagged unions), ``dict`` for free mappings, None for values."""
    members = _flatten(annotation)
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if models:
        kind = node.get("kind") if isinstance(node, dict) else None
        for model in models:
            tag = model.model_fields.get("kind")
            if tag is not None and kind in typing.get_args(tag.annotation):
                return model
        return models[0]
    return dict if any(typing.get_origin(m) is dict for m in members) else None


def _unknown_key(path: str, parts: Sequence[str], keys: Sequence[str]) -> InputError:
    prefix = ".".join(parts[:-1])
    full = [f"{prefix}.{k}" if prefix else k for k in keys]
    error = unknown_name("scenario setting", ".".join(parts), full)
    return error if path == ".".join(parts) else InputError(f"cannot set '{path}': {error}")


def apply_override(doc: dict[str, Any], parts: Sequence[str], value: Any) -> None:
    """Set ``doc[parts]`` = value in place, checking the path against the ``Scenario`` schema."""
    cls: Any = Scenario
    node = doc
    path = ".".join(parts)
    for i, key in enumerate(parts):
        last = i == len(parts) - 1
        if cls is dict:
            if not last:
                raise InputError(
                    f"cannot set '{path}': '{'.'.join(parts[: i + 1])}' is a value, not a section"
                )
            node[key] = value
            return
        fields = cls.model_fields
        if key not in fields:
            raise _unknown_key(path, parts[: i + 1], list(fields))
        if last:
            node[key] = value
            sibling = _EXCLUSIVE.get((parts[-2], key)) if len(parts) == 2 else None
            if sibling:
                node.pop(sibling, None)
            if parts[0] == "slo" and key != "source":
                node.pop("source", None)
            return
        sub = node.get(key)
        nxt = _submodel(fields[key].annotation, sub)
        if nxt is None:
            raise InputError(f"cannot set '{path}': '{'.'.join(parts[: i + 1])}' is a value, not a section")
        if sub is None:
            sub = node[key] = {}
        elif not isinstance(sub, dict):
            raise InputError(
                f"cannot set '{path}': '{'.'.join(parts[: i + 1])}' holds {sub!r}, not a mapping"
            )
        node, cls = sub, nxt


def _valid_keys_at(doc: dict[str, Any], parts: Sequence[str]) -> list[str] | None:
    cls: Any = Scenario
    node: Any = doc
    for key in parts:
        if cls is dict or cls is None or key not in cls.model_fields:
            return None
        node = node.get(key) if isinstance(node, dict) else None
        cls = _submodel(cls.model_fields[key].annotation, node)
    return list(cls.model_fields) if cls not in (None, dict) else None


def _validation_message(where: str | Path, doc: dict[str, Any], exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not (str(p) in _TAGS or "[" in str(p))]
    field = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        keys = _valid_keys_at(doc, loc[:-1])
        valid = (
            f"; valid keys{' under ' + '.'.join(loc[:-1]) if loc[:-1] else ''}: {', '.join(keys)}"
            if keys
            else ""
        )
        return f"{where}: unknown key '{field}'{valid}"
    msg = err["msg"].removeprefix("Value error, ")
    shown = err.get("input")
    got = f" (got {shown!r})" if isinstance(shown, (int, float, str)) and err["type"] != "missing" else ""
    return f"{where}: {field}: {_one_line(msg)}{got}"


def build_scenario(
    raw: dict[str, Any], overrides: Sequence[Override] = (), where: str | Path = "scenario"
) -> Scenario:
    """Expand presets, apply overrides (preset keys first, so presets re-expand), validate."""
    doc = copy.deepcopy(raw)
    early = [o for o in overrides if tuple(o[0]) in _PRESET_PATHS]
    for parts, value in early:
        if tuple(parts) == ("slo", "preset"):
            doc["slo"] = {"preset": value}
        else:
            workload = doc.setdefault("workload", {})
            if not isinstance(workload, dict):
                raise InputError(f"{where}: workload must be a mapping")
            workload["benchmark"] = value
    doc = expand_presets(doc, where)
    for parts, value in overrides:
        if tuple(parts) not in _PRESET_PATHS:
            apply_override(doc, parts, value)
    try:
        return Scenario.model_validate(doc)
    except ValidationError as exc:
        raise InputError(_validation_message(where, doc, exc)) from None


def revalidate(scenario: Scenario, updates: dict[str, Any], where: str | Path = "scenario") -> Scenario:
    """A copy of a validated scenario with top-level fields replaced, validated again."""
    doc = {**scenario.model_dump(mode="json"), **updates}
    try:
        return Scenario.model_validate(doc)
    except ValidationError as exc:
        raise InputError(_validation_message(where, doc, exc)) from None


def load_scenario(source: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Load a scenario file or shipped name, applying ``path=value`` overrides (see module docstring)."""
    parsed = [parse_override(o) for o in overrides]
    raw, path = load_raw(source)
    return build_scenario(raw, parsed, where=path)


def scenario_hash(scenario: Scenario) -> str:
    """A short digest of the validated scenario (same questions give the same hash)."""
    return hashlib.sha256(scenario.model_dump_json().encode()).hexdigest()[:16]
