"""Accelerator hardware profiles: strict YAML schema, SI conversion, cached loading.

A profile is one file ``hardware_profiles/accelerators/<id>.yaml`` in human units (GiB, TB/s, TFLOP/s,
GB/s, Gbit/s, us, W, $/GPU-hour) where every figure is a mapping ``{value, source, range?, note?}``
(see ``hardware_profiles/README.md``). Loading validates it (unknown keys rejected, every figure
sourced) and converts it, through ``simulator.units`` only, into a frozen :class:`Accelerator` whose
quantities are SI: bytes, bytes/s, FLOP/s, s, W. Figure names on the SI side (``sources``,
``figure_range``, ``with_overrides``, ``unknown_figures``) are the Accelerator attribute names, with
per-format compute peaks named ``peak_<fmt>_flops_per_s``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from simulator import units
from simulator.data import profiles_dir
from simulator.errors import InputError, unknown_name

COMPUTE_FORMATS = ("bf16", "fp8", "fp6", "fp4")
ARCHITECTURE_VENDOR = {
    "hopper": "nvidia", "blackwell": "nvidia", "blackwell-ultra": "nvidia", "rubin": "nvidia",
    "cdna3": "amd", "cdna4": "amd", "cdna5": "amd",
}
_REL_TOL = 0.005  # tolerance for derived-figure consistency checks (links x link bandwidth = per-GPU)

# ----------------------------------------------------------------------------------------- file schema
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Figure(_Strict):
    """One figure in the file's unit: ``value`` (null = nobody published it), provenance, optional range.

    Invariants: value and range finite and > 0; lo <= hi; a known value lies inside its range.
    """

    value: float | None
    source: Text
    range: Pair | None = None
    note: Text | None = None

    @model_validator(mode="after")
    def _check(self) -> Figure:
        numbers = [x for x in [self.value, *(self.range or [])] if x is not None]
        if any(not math.isfinite(x) or x <= 0 for x in numbers):
            raise ValueError("figures must be finite and > 0")
        if self.range is not None:
            lo, hi = self.range
            if lo > hi:
                raise ValueError(f"range [{lo}, {hi}] has lo > hi")
            if self.value is not None and not lo <= self.value <= hi:
                raise ValueError(f"value {self.value} lies outside its range [{lo}, {hi}]")
        return self


class KnownFigure(Figure):
    """A figure that must be published (the simulator cannot run without it)."""

    value: float


class CountFigure(_Strict):
    """A sourced whole number (GPUs, links)."""

    value: Annotated[int, Field(gt=0)]
    source: Text
    note: Text | None = None


class ComputeSpec(_Strict):
    """Dense tensor peaks in TFLOP/s; an absent key means the format is not supported in hardware."""

    dense_bf16_tflops: KnownFigure
    dense_fp8_tflops: KnownFigure | None = None
    dense_fp6_tflops: KnownFigure | None = None
    dense_fp4_tflops: KnownFigure | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, item in data.items():
                if item is None:
                    raise ValueError(f"{key} is null; omit the key if the format is unsupported in hardware")
        return data


class ScaleUpSpec(_Strict):
    """Scale-up fabric; bandwidths are per GPU (or per link) and per direction."""

    fabric: Text
    topology: Literal["switched", "mesh"]
    bandwidth_per_gpu_gb_per_s_per_direction: KnownFigure
    links_per_gpu: CountFigure | None = None
    link_bandwidth_gb_per_s_per_direction: KnownFigure | None = None
    domain_gpus: CountFigure
    in_network_reduction: bool
    allreduce_latency_us: KnownFigure

    @model_validator(mode="after")
    def _check(self) -> ScaleUpSpec:
        links, link_bw = self.links_per_gpu, self.link_bandwidth_gb_per_s_per_direction
        if self.topology == "switched":
            if links is not None or link_bw is not None:
                raise ValueError("links_per_gpu / link_bandwidth_gb_per_s_per_direction are for mesh only")
            return self
        if links is None or link_bw is None:
            raise ValueError("a mesh needs links_per_gpu and link_bandwidth_gb_per_s_per_direction")
        total = self.bandwidth_per_gpu_gb_per_s_per_direction.value
        if not math.isclose(links.value * link_bw.value, total, rel_tol=_REL_TOL):
            raise ValueError(f"mesh: {links.value} links x {link_bw.value} GB/s != {total} GB/s per GPU")
        if self.domain_gpus.value > links.value + 1:
            raise ValueError(f"a full mesh with {links.value} links per GPU spans <= {links.value + 1} GPUs")
        if self.in_network_reduction:
            raise ValueError("a point-to-point mesh has no switch to reduce in the network")
        return self


class AcceleratorSpec(_Strict):
    """One ``accelerators/<id>.yaml`` file (per GPU package; rack systems per GPU)."""

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]*$")]
    name: Text
    vendor: Literal["nvidia", "amd"]
    architecture: Literal["hopper", "blackwell", "blackwell-ultra", "rubin", "cdna3", "cdna4", "cdna5"]
    status: Literal["shipping", "announced"]
    launch: Text
    form_factor: Text
    hbm_type: Text
    hbm_capacity_gib: KnownFigure
    hbm_bandwidth_tb_per_s: KnownFigure
    compute: ComputeSpec
    scaleup: ScaleUpSpec
    scaleout_nic_gbit_per_s: KnownFigure
    gpus_per_node: CountFigure
    power_per_gpu_w: Figure
    node_power_w: Figure
    price_usd_per_gpu_hour: Figure | None = None

    @model_validator(mode="after")
    def _check(self) -> AcceleratorSpec:
        if ARCHITECTURE_VENDOR[self.architecture] != self.vendor:
            raise ValueError(f"vendor {self.vendor} does not match architecture {self.architecture}")
        domain, per_node = self.scaleup.domain_gpus.value, self.gpus_per_node.value
        if domain % per_node:
            raise ValueError(f"scaleup.domain_gpus {domain} is not a multiple of gpus_per_node {per_node}")
        gpu_w, node_w = self.power_per_gpu_w.value, self.node_power_w.value
        if gpu_w is not None and node_w is not None and node_w < per_node * gpu_w:
            raise ValueError(f"node_power_w {node_w} is below {per_node} x power_per_gpu_w {gpu_w}")
        return self


def _identity(value: float) -> float:
    return value


# SI attribute name -> (path of the figure in the file, converter from the file's unit to SI)
_FIGURES: dict[str, tuple[tuple[str, ...], Callable[[float], float]]] = {
    "hbm_capacity_bytes": (("hbm_capacity_gib",), units.gib_to_bytes),
    "hbm_bandwidth_bytes_per_s": (("hbm_bandwidth_tb_per_s",), units.tb_per_s_to_bytes_per_s),
    **{
        f"peak_{fmt}_flops_per_s": (("compute", f"dense_{fmt}_tflops"), units.tflops_to_flops_per_s)
        for fmt in COMPUTE_FORMATS
    },
    "scaleup_bandwidth_bytes_per_s": (
        ("scaleup", "bandwidth_per_gpu_gb_per_s_per_direction"), units.gb_per_s_to_bytes_per_s),
    "scaleup_link_bandwidth_bytes_per_s": (
        ("scaleup", "link_bandwidth_gb_per_s_per_direction"), units.gb_per_s_to_bytes_per_s),
    "scaleup_links_per_gpu": (("scaleup", "links_per_gpu"), _identity),
    "scaleup_domain_gpus": (("scaleup", "domain_gpus"), _identity),
    "allreduce_latency_s": (("scaleup", "allreduce_latency_us"), units.us_to_s),
    "scaleout_bandwidth_bytes_per_s": (("scaleout_nic_gbit_per_s",), units.gbit_per_s_to_bytes_per_s),
    "gpus_per_node": (("gpus_per_node",), _identity),
    "power_per_gpu_w": (("power_per_gpu_w",), _identity),
    "node_power_w": (("node_power_w",), _identity),
    "price_usd_per_gpu_hour": (("price_usd_per_gpu_hour",), _identity),
}
FIGURE_KEYS = tuple(_FIGURES)
_COUNT_KEYS = frozenset({"scaleup_links_per_gpu", "scaleup_domain_gpus", "gpus_per_node"})
_NULLABLE_KEYS = frozenset({"power_per_gpu_w", "node_power_w", "price_usd_per_gpu_hour"})
_PEAK_KEY = re.compile(r"^peak_(\w+)_flops_per_s$")
_OVERRIDE_SOURCE = "override: what-if value set by the caller"


# ------------------------------------------------------------------------------------------ SI object
@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One accelerator (per GPU package) in SI units: bytes, bytes/s, FLOP/s, s, W, $/GPU-hour.

    Bandwidths are per GPU and per direction. ``peak_flops_table`` holds the dense tensor peak per
    supported format, in ``COMPUTE_FORMATS`` order. Frozen and hashable; equality ignores provenance.
    ``status == 'announced'`` marks vendor projections that must be labelled so when printed.
    """

    id: str
    name: str
    vendor: str
    architecture: str
    status: str
    launch: str
    form_factor: str
    hbm_type: str
    hbm_capacity_bytes: float
    hbm_bandwidth_bytes_per_s: float
    peak_flops_table: tuple[tuple[str, float], ...]
    scaleup_fabric: str
    scaleup_topology: str
    scaleup_bandwidth_bytes_per_s: float
    scaleup_link_bandwidth_bytes_per_s: float | None
    scaleup_links_per_gpu: int | None
    scaleup_domain_gpus: int
    in_network_reduction: bool
    allreduce_latency_s: float
    scaleout_bandwidth_bytes_per_s: float
    gpus_per_node: int
    power_per_gpu_w: float | None
    node_power_w: float | None
    price_usd_per_gpu_hour: float | None
    ranges: tuple[tuple[str, float, float], ...] = ()  # (SI figure key, lo, hi) where sources disagree
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    notes: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def peak_flops_per_s(self, fmt: str) -> float | None:
        """Dense tensor peak in FLOP/s for ``fmt`` (a COMPUTE_FORMATS entry); None = not in hardware."""
        if fmt not in COMPUTE_FORMATS:
            raise unknown_name("compute format", fmt, COMPUTE_FORMATS)
        for name, peak in self.peak_flops_table:
            if name == fmt:
                return peak
        return None

    @property
    def supported_compute_formats(self) -> tuple[str, ...]:
        """Formats with a hardware tensor rate, in COMPUTE_FORMATS order."""
        return tuple(fmt for fmt, _ in self.peak_flops_table)

    @property
    def is_announced(self) -> bool:
        """True for announced parts whose figures are vendor projections."""
        return self.status == "announced"

    @property
    def nodes_per_scaleup_domain(self) -> int:
        """Nodes (servers / compute trays) forming one scale-up domain: 1 for HGX/OAM, 18 for NVL72."""
        return max(1, self.scaleup_domain_gpus // self.gpus_per_node)

    @property
    def unknown_figures(self) -> tuple[str, ...]:
        """SI figure keys whose value nobody published (value None)."""
        return tuple(key for key in sorted(_NULLABLE_KEYS) if getattr(self, key) is None)

    def figure(self, key: str) -> float | int | None:
        """The SI value of a figure key (attribute name or ``peak_<fmt>_flops_per_s``)."""
        if key not in _FIGURES:
            raise unknown_name("hardware figure", key, FIGURE_KEYS)
        match = _PEAK_KEY.match(key)
        return self.peak_flops_per_s(match.group(1)) if match else getattr(self, key)

    def figure_range(self, key: str) -> tuple[float, float]:
        """SI (lo, hi) of a figure where sources disagree; (v, v) when there is no range.

        Raises InputError for a format not supported in hardware, or an unknown figure without a range.
        """
        value = self.figure(key)
        for name, lo, hi in self.ranges:
            if name == key:
                return (lo, hi)
        if value is None:
            why = "not supported in hardware" if key.startswith("peak_") else "unknown (not published)"
            raise InputError(f"{self.id}: {key} is {why}, so it has no range")
        return (float(value), float(value))

    def with_overrides(self, **si_values: float | int | bool | None) -> Accelerator:
        """A copy with SI figures replaced (what-ifs, range sweeps); overridden figures lose their range.

        Keys are figure keys (see ``FIGURE_KEYS``) or ``in_network_reduction``. On a mesh, overriding the
        link count or link bandwidth re-derives the per-GPU bandwidth, and vice versa.
        """
        changes: dict[str, Any] = {}
        peaks = dict(self.peak_flops_table)
        for key, value in si_values.items():
            if key == "in_network_reduction":
                if not isinstance(value, bool):
                    raise InputError(f"{self.id}: override in_network_reduction must be true or false")
                changes[key] = value
                continue
            checked = _check_override(self, key, value)
            match = _PEAK_KEY.match(key)
            if match:
                if match.group(1) not in peaks:
                    raise InputError(f"{self.id}: cannot override {key}: {match.group(1)} is not supported")
                peaks[match.group(1)] = float(checked)  # type: ignore[arg-type]
            else:
                changes[key] = checked
        overridden = set(si_values) - {"in_network_reduction"}
        derived = _rebalance_mesh(self, changes)
        sources, notes = dict(self.sources), dict(self.notes)
        for key in overridden | derived:
            sources[key] = _OVERRIDE_SOURCE if key in overridden else "derived from overridden mesh figures"
            notes.pop(key, None)
        return dataclasses.replace(
            self, **changes,
            peak_flops_table=tuple((fmt, peaks[fmt]) for fmt in COMPUTE_FORMATS if fmt in peaks),
            ranges=tuple(r for r in self.ranges if r[0] not in overridden | derived),
            sources=MappingProxyType(sources), notes=MappingProxyType(notes),
        )


def _check_override(acc: Accelerator, key: str, value: object) -> float | int | None:
    if key not in _FIGURES:
        raise unknown_name("hardware figure", key, (*FIGURE_KEYS, "in_network_reduction"))
    if value is None:
        if key in _NULLABLE_KEYS:
            return None
        raise InputError(f"{acc.id}: override {key} must be a number, not None")
    mesh_only = key in ("scaleup_links_per_gpu", "scaleup_link_bandwidth_bytes_per_s")
    if mesh_only and acc.scaleup_topology != "mesh":
        raise InputError(f"{acc.id}: cannot override {key} on a {acc.scaleup_topology} fabric (mesh only)")
    if key in _COUNT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{acc.id}: override {key} must be a positive whole number, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InputError(f"{acc.id}: override {key} must be a finite number > 0, got {value!r}")
    return float(value)


def _rebalance_mesh(acc: Accelerator, changes: dict[str, Any]) -> set[str]:
    """Keep links x link bandwidth == per-GPU bandwidth on a mesh; return the keys it derived."""
    if acc.scaleup_topology != "mesh":
        return set()
    total_key, link_key, count_key = (
        "scaleup_bandwidth_bytes_per_s", "scaleup_link_bandwidth_bytes_per_s", "scaleup_links_per_gpu")
    links = changes.get(count_key, acc.scaleup_links_per_gpu)
    link_bw = changes.get(link_key, acc.scaleup_link_bandwidth_bytes_per_s)
    if total_key in changes and (link_key in changes or count_key in changes):
        if not math.isclose(links * link_bw, changes[total_key], rel_tol=_REL_TOL):
            raise InputError(f"{acc.id}: overrides disagree: {links} links x {link_bw} B/s != {total_key}")
        return set()
    if total_key in changes:
        changes[link_key] = changes[total_key] / links
        return {link_key}
    if link_key in changes or count_key in changes:
        changes[total_key] = links * link_bw
        return {total_key}
    return set()


def _to_accelerator(spec: AcceleratorSpec) -> Accelerator:
    """Convert a validated file to SI through simulator.units."""
    values: dict[str, Any] = {}
    ranges: list[tuple[str, float, float]] = []
    sources: dict[str, str] = {}
    notes: dict[str, str] = {}
    for key, (path, convert) in _FIGURES.items():
        node: Any = spec
        for part in path:
            node = getattr(node, part)
        if node is None:  # key absent in the file: format not supported / not a mesh / no price given
            values[key] = None
            continue
        values[key] = None if node.value is None else convert(node.value)
        sources[key] = node.source
        if node.note is not None:
            notes[key] = node.note
        if getattr(node, "range", None) is not None:
            lo, hi = node.range
            ranges.append((key, convert(lo), convert(hi)))
    all_peaks = {fmt: values.pop(f"peak_{fmt}_flops_per_s") for fmt in COMPUTE_FORMATS}
    peaks = tuple((fmt, peak) for fmt, peak in all_peaks.items() if peak is not None)
    return Accelerator(
        id=spec.id, name=spec.name, vendor=spec.vendor, architecture=spec.architecture, status=spec.status,
        launch=spec.launch, form_factor=spec.form_factor, hbm_type=spec.hbm_type,
        peak_flops_table=peaks, scaleup_fabric=spec.scaleup.fabric, scaleup_topology=spec.scaleup.topology,
        in_network_reduction=spec.scaleup.in_network_reduction, **values,
        ranges=tuple(ranges), sources=MappingProxyType(sources), notes=MappingProxyType(notes),
    )


# ---------------------------------------------------------------------------------------------- loading
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of silently keeping the last one."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _validation_message(path: Path, error: ValidationError) -> str:
    errors = error.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (not part of the accelerator schema)"
    elif first["type"] == "missing":
        message = "required key is missing"
    got = first.get("input")
    if first["type"] not in ("extra_forbidden", "missing") and not isinstance(got, (dict, list)):
        message += f" (got {got!r})"
    more = f" (+{len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = f"field {field}: " if field else ""  # model-level checks name their fields in the message
    return _one_line(f"hardware profile {path}: {where}{message}{more}")


def load_accelerator_file(path: str | Path) -> Accelerator:
    """Load and validate one profile file; any problem is a one-line InputError naming file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"hardware profile {path}: cannot read file ({exc.strerror})") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputError(_one_line(f"hardware profile {path}: malformed YAML: {exc}")) from exc
    if not isinstance(data, dict):
        raise InputError(f"hardware profile {path}: expected a mapping of keys at the top level")
    try:
        spec = AcceleratorSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(_validation_message(path, exc)) from exc
    return _to_accelerator(spec)


def accelerators_dir() -> Path:
    """Folder of the shipped accelerator profiles."""
    return profiles_dir() / "accelerators"


@functools.lru_cache(maxsize=1)
def _catalog() -> Mapping[str, Accelerator]:
    catalog: dict[str, Accelerator] = {}
    for path in sorted(accelerators_dir().glob("*.yaml")):
        accelerator = load_accelerator_file(path)
        if accelerator.id != path.stem:
            raise InputError(f"hardware profile {path}: field id: '{accelerator.id}' != file name")
        catalog[accelerator.id] = accelerator
    return MappingProxyType(catalog)


def accelerator_ids() -> list[str]:
    """Ids of the shipped profiles, sorted."""
    return sorted(_catalog())


def list_accelerators() -> list[Accelerator]:
    """All shipped profiles, sorted by id."""
    catalog = _catalog()
    return [catalog[key] for key in sorted(catalog)]


@functools.lru_cache(maxsize=256)
def load_accelerator(name: str) -> Accelerator:
    """A shipped profile by id (case-insensitive); unknown names raise InputError listing valid ids."""
    catalog = _catalog()
    key = name.strip().lower()
    if key not in catalog:
        raise unknown_name("hardware", name, catalog)
    return catalog[key]


def clear_cache() -> None:
    """Forget loaded profiles (after editing files at run time, or in tests)."""
    load_accelerator.cache_clear()
    _catalog.cache_clear()
