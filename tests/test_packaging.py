"""Packaging replicas into nodes and racks: hand-computed cases, power and cost formulas."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.errors import InputError
from simulator.packaging import package
from simulator.units import SECONDS_PER_HOUR, kw_to_w

HGX = {"gpus_per_node": 8, "nodes_per_rack": 4, "scale_up_domain_gpus": 8,
       "node_power_w": 10_200.0, "power_per_gpu_w": 700.0}
NVL72 = {"gpus_per_node": 4, "nodes_per_rack": 18, "scale_up_domain_gpus": 72,
         "node_power_w": 6_600.0, "power_per_gpu_w": 1_400.0}


def test_one_gpu_replicas_pack_into_nodes() -> None:
    p = package(replicas=87, tp=1, **HGX)
    assert (p.gpus, p.nodes, p.gpus_provisioned, p.racks) == (87, 11, 88, 3)
    d = p.to_dict()
    assert d["gpus"] == 87 and d["nodes"] == 11 and d["racks"] == 3


def test_partial_replicas_per_node_leave_slots_idle() -> None:
    p = package(replicas=5, tp=3, **HGX)  # 2 replicas of 3 GPUs per 8-GPU node
    assert (p.gpus, p.nodes) == (15, 3)


def test_replica_spanning_nodes_with_pipeline() -> None:
    p = package(replicas=3, tp=8, pp=2, **HGX)
    assert (p.gpus, p.nodes, p.racks, p.nodes_per_replica) == (48, 6, 2, 2)


def test_nvl72_tp4_fills_trays_18_per_rack() -> None:
    p = package(replicas=18, tp=4, **NVL72)
    assert (p.gpus, p.nodes, p.racks) == (72, 18, 1)
    assert package(replicas=19, tp=4, **NVL72).racks == 2


def test_nvl72_tp_across_trays_stays_in_one_domain() -> None:
    p8 = package(replicas=9, tp=8, **NVL72)  # 2 trays per replica, 9 per rack
    assert (p8.nodes, p8.racks) == (18, 1)
    p16 = package(replicas=5, tp=16, **NVL72)  # 4 trays per replica: 4 per 18-tray domain, not 4.5
    assert (p16.gpus, p16.nodes, p16.racks) == (80, 20, 2)


def test_tp_beyond_scale_up_domain_rejected_in_one_line() -> None:
    with pytest.raises(InputError, match="tp=16 does not fit the scale-up domain of 8 GPUs") as exc:
        package(replicas=1, tp=16, **HGX)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "bad",
    [{"replicas": 0}, {"tp": 0}, {"pue": 0.9}, {"node_power_w": 1000.0},
     {"spare_nodes": 1, "headroom_frac": 0.1}, {"headroom_frac": 1.5}, {"price_usd_per_gpu_hour": -1.0}],
)
def test_invalid_inputs(bad: dict) -> None:
    args = {"replicas": 4, "tp": 1, **HGX, **bad}
    with pytest.raises(InputError):
        package(**args)


def test_power_includes_whole_node_and_pue_multiplies() -> None:
    p = package(replicas=16, tp=1, pue=1.3, **HGX)
    assert p.nodes == 2
    assert p.it_power_w == pytest.approx(2 * 10_200.0)
    assert p.it_power_w > p.gpu_power_w == pytest.approx(16 * 700.0)  # TDP alone understates
    assert p.facility_power_w == pytest.approx(1.3 * p.it_power_w)
    d = p.to_dict()
    assert kw_to_w(d["power_kw"]) == pytest.approx(p.it_power_w)
    assert kw_to_w(d["facility_power_kw"]) == pytest.approx(p.facility_power_w)


def test_spares_and_headroom() -> None:
    p = package(replicas=87, tp=1, spare_nodes=2, **HGX)
    assert (p.nodes, p.spare_nodes, p.racks) == (13, 2, 4)  # 11 + 2; 13 nodes in racks of 4
    h = package(replicas=87, tp=1, headroom_frac=0.1, **HGX)
    assert h.spare_nodes == math.ceil(0.1 * 11) == 2
    assert h.gpus == 87 and h.gpus_provisioned == 13 * 8
    assert h.it_power_w == pytest.approx(13 * 10_200.0)


def test_cost_formula() -> None:
    p = package(replicas=16, tp=1, pue=1.25, price_usd_per_gpu_hour=2.5, usd_per_kwh=0.1,
                output_tokens_per_s=50_000.0, **HGX)
    facility_kw = 1.25 * 2 * 10.2
    assert p.energy_usd_per_hour == pytest.approx(facility_kw * 0.1)
    assert p.usd_per_hour == pytest.approx(2.5 * 16 + facility_kw * 0.1)
    tokens_per_hour = 50_000.0 * SECONDS_PER_HOUR
    assert p.usd_per_million_output_tokens == pytest.approx(p.usd_per_hour / tokens_per_hour * 1e6)
    no_price = package(replicas=16, tp=1, usd_per_kwh=0.1, **HGX)
    assert no_price.usd_per_hour is None and no_price.usd_per_million_output_tokens is None
    assert no_price.to_dict()["usd_per_hour"] is None


@given(
    replicas=st.integers(1, 5000),
    tp=st.sampled_from([1, 2, 4, 8]),
    pp=st.integers(1, 4),
    spare=st.integers(0, 5),
)
def test_invariants(replicas: int, tp: int, pp: int, spare: int) -> None:
    p = package(replicas=replicas, tp=tp, pp=pp, spare_nodes=spare, **HGX)
    assert p.gpus == replicas * tp * pp <= p.gpus_provisioned == p.nodes * 8
    gpus_per_replica = tp * pp
    if gpus_per_replica <= 8:  # whole replicas per node; one node fewer would not hold them all
        per_node = 8 // gpus_per_replica
        assert (p.nodes - spare - 1) * per_node < replicas <= (p.nodes - spare) * per_node
    else:  # each replica on its own ceil(gpus/8) nodes
        assert p.nodes - spare == replicas * math.ceil(gpus_per_replica / 8)
    assert p.racks == math.ceil(p.nodes / 4)
    bigger = package(replicas=replicas + 1, tp=tp, pp=pp, spare_nodes=spare, **HGX)
    assert bigger.nodes >= p.nodes and bigger.racks >= p.racks
