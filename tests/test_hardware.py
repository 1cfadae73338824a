"""Accelerator profiles: every shipped file validates, the schema is strict, SI conversion is right."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from simulator import hardware, units
from simulator.errors import InputError

PROFILE_FILES = sorted(hardware.accelerators_dir().glob("*.yaml"))
EXPECTED_IDS = {
    "h100", "h200", "b200", "b300", "gb200-nvl72", "gb300-nvl72", "mi300x", "mi325x", "mi350x", "mi355x",
    "vera-rubin-nvl72", "mi455x-helios",
}
ANNOUNCED = {"vera-rubin-nvl72", "mi455x-helios"}


def _raw(accelerator_id: str = "h100") -> dict:
    path = hardware.accelerators_dir() / f"{accelerator_id}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: dict, name: str = "h100.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _rejected(tmp_path: Path, data: dict) -> str:
    """Load a modified profile, assert it is rejected with a one-line message, return the message."""
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as info:
        hardware.load_accelerator_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# ------------------------------------------------------------------------------------ shipped profiles
def test_the_expected_profiles_ship() -> None:
    assert {path.stem for path in PROFILE_FILES} == EXPECTED_IDS
    assert hardware.accelerator_ids() == sorted(EXPECTED_IDS)
    assert [acc.id for acc in hardware.list_accelerators()] == sorted(EXPECTED_IDS)


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_every_profile_validates_and_its_id_is_its_file_name(path: Path) -> None:
    acc = hardware.load_accelerator_file(path)
    assert acc.id == path.stem
    assert acc.vendor in ("nvidia", "amd")
    assert acc.status in ("shipping", "announced")
    assert hardware.ARCHITECTURE_VENDOR[acc.architecture] == acc.vendor


def test_announced_parts_are_marked_announced() -> None:
    announced = {acc.id for acc in hardware.list_accelerators() if acc.status == "announced"}
    assert announced == ANNOUNCED
    assert all(hardware.load_accelerator(name).is_announced for name in ANNOUNCED)


def test_every_known_figure_has_a_non_empty_source() -> None:
    for acc in hardware.list_accelerators():
        for key in hardware.FIGURE_KEYS:
            if acc.figure(key) is not None:
                assert acc.sources.get(key, "").strip(), f"{acc.id}: {key} has no source"
        for key in acc.unknown_figures:
            assert acc.sources[key].strip(), f"{acc.id}: unknown {key} must say why"


def test_unknown_figures_are_reported() -> None:
    rubin = hardware.load_accelerator("vera-rubin-nvl72")
    assert rubin.power_per_gpu_w is None
    assert "power_per_gpu_w" in rubin.unknown_figures
    assert "not published" in rubin.sources["power_per_gpu_w"]
    assert hardware.load_accelerator("h100").unknown_figures == ()


def test_ranges_contain_their_value() -> None:
    checked = 0
    for acc in hardware.list_accelerators():
        for key, lo, hi in acc.ranges:
            assert lo <= hi
            value = acc.figure(key)
            if value is not None:
                assert lo <= value <= hi, f"{acc.id}: {key}={value} outside [{lo}, {hi}]"
                checked += 1
            assert acc.figure_range(key) == (lo, hi)
    assert checked > 20


def test_figure_range_is_degenerate_without_a_range_and_si_with_one() -> None:
    h100 = hardware.load_accelerator("h100")
    assert h100.figure_range("hbm_bandwidth_bytes_per_s") == (h100.hbm_bandwidth_bytes_per_s,) * 2
    rubin = hardware.load_accelerator("vera-rubin-nvl72")
    lo, hi = rubin.figure_range("peak_fp4_flops_per_s")
    assert (lo, hi) == (units.tflops_to_flops_per_s(25000), units.tflops_to_flops_per_s(35000))
    assert rubin.figure_range("power_per_gpu_w") == (1800, 2300)  # unpublished, but reported range
    with pytest.raises(InputError):
        h100.figure_range("peak_fp4_flops_per_s")
    with pytest.raises(InputError):
        hardware.load_accelerator("mi455x-helios").figure_range("power_per_gpu_w")
    with pytest.raises(InputError, match="valid choices"):
        h100.figure_range("hbm_capacity_gib")


# ---------------------------------------------------------------------------------- physics of the data
@pytest.mark.parametrize(
    ("name", "vendor_bidirectional_gb_per_s"),
    [("h100", 900), ("h200", 900), ("b200", 1800), ("gb300-nvl72", 1800), ("vera-rubin-nvl72", 3600),
     ("mi300x", 7 * 128), ("mi355x", 7 * 153.6)],
)
def test_scaleup_per_direction_is_half_the_vendor_bidirectional_figure(
    name: str, vendor_bidirectional_gb_per_s: float
) -> None:
    acc = hardware.load_accelerator(name)
    expected = units.gb_per_s_to_bytes_per_s(vendor_bidirectional_gb_per_s) / 2
    assert math.isclose(acc.scaleup_bandwidth_bytes_per_s, expected, rel_tol=1e-9)


def test_mesh_fabrics_are_links_times_link_bandwidth_and_switched_have_no_links() -> None:
    for acc in hardware.list_accelerators():
        if acc.scaleup_topology == "mesh":
            assert acc.vendor == "amd" and acc.scaleup_links_per_gpu == 7
            assert acc.scaleup_domain_gpus <= acc.scaleup_links_per_gpu + 1
            total = acc.scaleup_links_per_gpu * acc.scaleup_link_bandwidth_bytes_per_s
            assert math.isclose(total, acc.scaleup_bandwidth_bytes_per_s, rel_tol=0.005)
            assert not acc.in_network_reduction
        else:
            assert acc.scaleup_links_per_gpu is None and acc.scaleup_link_bandwidth_bytes_per_s is None
    mi300x = hardware.load_accelerator("mi300x")
    assert mi300x.figure_range("scaleup_link_bandwidth_bytes_per_s") == (
        units.gb_per_s_to_bytes_per_s(48), units.gb_per_s_to_bytes_per_s(64))


def test_rack_systems_are_trays_of_four_in_a_72_gpu_domain() -> None:
    for name in ("gb200-nvl72", "gb300-nvl72", "vera-rubin-nvl72", "mi455x-helios"):
        acc = hardware.load_accelerator(name)
        assert (acc.gpus_per_node, acc.scaleup_domain_gpus, acc.nodes_per_scaleup_domain) == (4, 72, 18)
    assert hardware.load_accelerator("b200").nodes_per_scaleup_domain == 1


def test_format_support() -> None:
    h100 = hardware.load_accelerator("h100")
    assert h100.peak_flops_per_s("fp4") is None and h100.peak_flops_per_s("fp6") is None
    assert h100.supported_compute_formats == ("bf16", "fp8")
    mi355x, b200 = hardware.load_accelerator("mi355x"), hardware.load_accelerator("b200")
    assert mi355x.peak_flops_per_s("fp6") == mi355x.peak_flops_per_s("fp4")
    assert b200.peak_flops_per_s("fp6") == b200.peak_flops_per_s("fp8")
    with pytest.raises(InputError, match="fp4"):
        h100.peak_flops_per_s("int4")


def test_fp6_rate_follows_the_architecture_and_lower_precision_is_never_slower() -> None:
    for acc in hardware.list_accelerators():
        peaks = [acc.peak_flops_per_s(fmt) for fmt in acc.supported_compute_formats]
        assert peaks == sorted(peaks), f"{acc.id}: lower precision must not be slower"
        if acc.architecture in ("blackwell", "blackwell-ultra", "rubin"):
            assert acc.peak_flops_per_s("fp6") == acc.peak_flops_per_s("fp8")
        if acc.architecture == "cdna4":
            assert acc.peak_flops_per_s("fp6") == acc.peak_flops_per_s("fp4")
        if acc.architecture in ("hopper", "cdna3"):
            assert acc.supported_compute_formats == ("bf16", "fp8")


def test_units_are_converted_to_si() -> None:
    h100 = hardware.load_accelerator("h100")
    assert h100.hbm_capacity_bytes == 85_899_345_920  # 80 GiB, binary
    assert h100.hbm_bandwidth_bytes_per_s == pytest.approx(3.35e12)
    assert h100.peak_flops_per_s("bf16") == pytest.approx(989.4e12)
    assert h100.scaleout_bandwidth_bytes_per_s == pytest.approx(50e9)  # 400 Gbit/s
    assert h100.allreduce_latency_s == pytest.approx(10e-6)
    assert hardware.load_accelerator("mi300x").hbm_capacity_bytes == 192 * 2**30


def test_node_power_covers_its_gpus() -> None:
    for acc in hardware.list_accelerators():
        if acc.node_power_w is not None and acc.power_per_gpu_w is not None:
            assert acc.node_power_w >= acc.gpus_per_node * acc.power_per_gpu_w


# -------------------------------------------------------------------------------------------- loading
def test_lookup_is_case_insensitive_and_cached() -> None:
    assert hardware.load_accelerator(" H100 ") is hardware.load_accelerator("h100")
    assert hardware.load_accelerator("MI355X").id == "mi355x"


def test_unknown_name_lists_the_valid_choices() -> None:
    with pytest.raises(InputError) as info:
        hardware.load_accelerator("h1000")
    message = str(info.value)
    assert "h1000" in message and "valid choices" in message and "\n" not in message
    assert all(name in message for name in EXPECTED_IDS)


def test_a_copy_of_a_shipped_profile_loads(tmp_path: Path) -> None:
    acc = hardware.load_accelerator_file(_write(tmp_path, _raw("mi355x"), "mi355x.yaml"))
    assert acc == hardware.load_accelerator("mi355x")


@pytest.mark.parametrize("where", ["top", "figure", "scaleup", "compute"])
def test_unknown_keys_are_rejected(tmp_path: Path, where: str) -> None:
    data = _raw()
    target = {"top": data, "figure": data["hbm_capacity_gib"], "scaleup": data["scaleup"],
              "compute": data["compute"]}[where]
    target["hbm_speed_tb_per_s"] = {"value": 1, "source": "typo"}
    assert "hbm_speed_tb_per_s" in _rejected(tmp_path, data)


def test_a_figure_without_source_is_rejected(tmp_path: Path) -> None:
    data = _raw()
    del data["hbm_bandwidth_tb_per_s"]["source"]
    assert "hbm_bandwidth_tb_per_s.source" in _rejected(tmp_path, data)
    data = _raw()
    data["scaleup"]["domain_gpus"]["source"] = "   "
    assert "scaleup.domain_gpus.source" in _rejected(tmp_path, data)
    data = _raw()
    data["power_per_gpu_w"] = 700  # a bare number is not a figure
    assert "power_per_gpu_w" in _rejected(tmp_path, data)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["hbm_capacity_gib"].update(value=None), "field hbm_capacity_gib.value:"),
        (lambda d: d["hbm_capacity_gib"].update(range=[90, 100]), "field hbm_capacity_gib: value 80"),
        (lambda d: d["hbm_capacity_gib"].update(range=[100, 60]), "field hbm_capacity_gib: range"),
        (lambda d: d["hbm_capacity_gib"].update(range=[60, 80, 100]), "field hbm_capacity_gib.range:"),
        (lambda d: d["hbm_capacity_gib"].update(value="80"), "field hbm_capacity_gib.value:"),
        (lambda d: d["hbm_capacity_gib"].update(value=-80), "field hbm_capacity_gib: figures must be"),
        (lambda d: d["compute"].update(dense_fp4_tflops=None), "field compute: dense_fp4_tflops is null"),
        (lambda d: d.update(status="rumoured"), "field status:"),
        (lambda d: d.update(vendor="amd"), "vendor amd does not match architecture hopper"),
        (lambda d: d["scaleup"].update(topology="mesh"), "field scaleup: a mesh needs links_per_gpu"),
        (lambda d: d["scaleup"].update(in_network_reduction="yes"), "field scaleup.in_network_reduction:"),
        (lambda d: d["gpus_per_node"].update(value=3), "not a multiple of gpus_per_node 3"),
        (lambda d: d["node_power_w"].update(value=4000), "node_power_w 4000.0 is below 8 x power_per_gpu_w"),
        (lambda d: d.pop("scaleout_nic_gbit_per_s"), "field scaleout_nic_gbit_per_s: required key"),
        (lambda d: d.update(id="H100"), "field id:"),
    ],
)
def test_schema_violations_name_the_field(tmp_path: Path, mutate, expected: str) -> None:
    data = copy.deepcopy(_raw())
    mutate(data)
    assert expected in _rejected(tmp_path, data)


def test_malformed_yaml_and_duplicate_keys_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: h100\nname: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match="malformed YAML") as info:
        hardware.load_accelerator_file(bad)
    assert "\n" not in str(info.value) and "bad.yaml" in str(info.value)
    text = (hardware.accelerators_dir() / "h100.yaml").read_text(encoding="utf-8")
    dup = tmp_path / "dup.yaml"
    dup.write_text(text + "\nhbm_type: HBM2\n", encoding="utf-8")
    with pytest.raises(InputError, match="duplicate key 'hbm_type'"):
        hardware.load_accelerator_file(dup)
    with pytest.raises(InputError, match="cannot read"):
        hardware.load_accelerator_file(tmp_path / "missing.yaml")


# -------------------------------------------------------------------------------------------- what-ifs
def test_with_overrides_returns_a_modified_copy() -> None:
    b200 = hardware.load_accelerator("b200")
    faster = b200.with_overrides(hbm_bandwidth_bytes_per_s=10e12, peak_fp4_flops_per_s=20e15)
    assert faster.hbm_bandwidth_bytes_per_s == 10e12 and faster.peak_flops_per_s("fp4") == 20e15
    assert faster.figure_range("peak_fp4_flops_per_s") == (20e15, 20e15)
    assert faster.sources["hbm_bandwidth_bytes_per_s"].startswith("override")
    assert b200.hbm_bandwidth_bytes_per_s == units.tb_per_s_to_bytes_per_s(8.0)  # original untouched
    assert faster != b200 and hash(faster) != hash(b200)
    with pytest.raises(InputError, match="valid choices"):
        b200.with_overrides(hbm_bandwith_bytes_per_s=1.0)
    with pytest.raises(InputError):
        b200.with_overrides(hbm_capacity_bytes=-1.0)
    with pytest.raises(InputError):
        hardware.load_accelerator("h100").with_overrides(peak_fp4_flops_per_s=1e15)


def test_mesh_overrides_keep_links_consistent() -> None:
    mi300x = hardware.load_accelerator("mi300x")
    effective = mi300x.with_overrides(scaleup_link_bandwidth_bytes_per_s=units.gb_per_s_to_bytes_per_s(48))
    assert effective.scaleup_bandwidth_bytes_per_s == pytest.approx(units.gb_per_s_to_bytes_per_s(336))
    lo, _ = mi300x.figure_range("scaleup_bandwidth_bytes_per_s")
    swept = mi300x.with_overrides(scaleup_bandwidth_bytes_per_s=lo)
    assert swept.scaleup_link_bandwidth_bytes_per_s == pytest.approx(units.gb_per_s_to_bytes_per_s(48))
    with pytest.raises(InputError):
        hardware.load_accelerator("h100").with_overrides(scaleup_links_per_gpu=4)
