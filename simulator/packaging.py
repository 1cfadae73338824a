"""Packaging a fleet of replicas into GPUs, nodes and racks, with its power and cost.

Placement rules:

- A replica uses ``tp * pp`` GPUs. Its tensor-parallel group must sit inside one scale-up domain
  (``tp <= scale_up_domain_gpus``); pipeline stages may span nodes and domains.
- Replicas that fit in a node pack whole into nodes: ``gpus_per_node // gpus_per_replica`` per node
  (87 one-GPU replicas on 8-GPU nodes -> 11 nodes). A replica larger than a node spans
  ``ceil(gpus_per_replica / gpus_per_node)`` nodes of its own.
- When a TP group is larger than a node (multi-node NVLink domains, e.g. NVL72: 18 trays of 4 GPUs),
  each pipeline stage takes ``ceil(tp / gpus_per_node)`` nodes that must lie in one domain, so a domain
  holds ``nodes_per_domain // nodes_per_stage`` stages; leftover trays are not counted as nodes.
- Spare nodes (``spare_nodes``, or ``ceil(headroom_frac * nodes)``) are added on top.
- Racks: ``ceil(nodes / nodes_per_rack)``, or by domains when stages are domain-bound.

Power is provisioned (nameplate) power: every node draws ``node_power_w`` (the whole server: GPUs,
CPUs, NICs, fans, ...; a GPU's TDP alone understates a server's draw). ``facility_power_w`` multiplies
by the PUE. Cost: ``price_usd_per_gpu_hour`` x the GPUs in the provisioned nodes (you rent or buy whole
servers, spares included) plus, when ``usd_per_kwh`` is given, the facility energy per hour. Internally
SI (W, USD/h); :meth:`Packaging.to_dict` converts power to kW for tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simulator.errors import InputError
from simulator.units import per_hour_to_per_s, per_million, w_to_kw


@dataclass(frozen=True)
class Packaging:
    """A fleet's hardware footprint, power and cost (W and USD/h; None where no price was given).

    Invariants: ``gpus = replicas * gpus_per_replica <= gpus_provisioned = nodes * gpus_per_node``;
    ``spare_nodes <= nodes``; ``facility_power_w = pue * it_power_w >= it_power_w >= gpu_power_w``.
    """

    replicas: int
    gpus_per_replica: int
    gpus: int
    gpus_provisioned: int
    nodes: int
    spare_nodes: int
    racks: int
    nodes_per_replica: float
    it_power_w: float
    gpu_power_w: float
    facility_power_w: float
    usd_per_hour: float | None
    energy_usd_per_hour: float | None
    usd_per_million_output_tokens: float | None

    def to_dict(self) -> dict[str, Any]:
        """Table columns with unit-suffixed keys (power in kW)."""
        return {
            "gpus": self.gpus,
            "gpus_provisioned": self.gpus_provisioned,
            "nodes": self.nodes,
            "spare_nodes": self.spare_nodes,
            "racks": self.racks,
            "power_kw": w_to_kw(self.it_power_w),
            "facility_power_kw": w_to_kw(self.facility_power_w),
            "usd_per_hour": self.usd_per_hour,
            "usd_per_million_output_tokens": self.usd_per_million_output_tokens,
        }


def _check_positive_ints(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")


def _layout_nodes(
    replicas: int, tp: int, pp: int, gpus_per_node: int, nodes_per_rack: int, scale_up_domain_gpus: int
) -> tuple[int, int, float]:
    """(nodes hosting replicas, racks for them, nodes per replica) without spares."""
    gpus_per_replica = tp * pp
    if tp > gpus_per_node:
        # TP group spans several nodes of a multi-node scale-up domain: place stages domain by domain.
        nodes_per_stage = math.ceil(tp / gpus_per_node)
        nodes_per_domain = scale_up_domain_gpus // gpus_per_node
        stages_per_domain = nodes_per_domain // nodes_per_stage
        if stages_per_domain < 1:
            raise InputError(
                f"tp={tp} needs {nodes_per_stage} nodes of {gpus_per_node} GPUs but the scale-up domain "
                f"holds {nodes_per_domain} whole nodes ({scale_up_domain_gpus} GPUs)"
            )
        stages = replicas * pp
        domains = math.ceil(stages / stages_per_domain)
        if nodes_per_domain <= nodes_per_rack:
            racks = math.ceil(domains / (nodes_per_rack // nodes_per_domain))
        else:  # a domain spanning several racks (e.g. NVL36x2)
            racks = domains * math.ceil(nodes_per_domain / nodes_per_rack)
        return stages * nodes_per_stage, racks, pp * nodes_per_stage
    if gpus_per_replica <= gpus_per_node:
        per_node = gpus_per_node // gpus_per_replica
        nodes = math.ceil(replicas / per_node)
        return nodes, math.ceil(nodes / nodes_per_rack), 1.0 / per_node
    nodes_per_replica = math.ceil(gpus_per_replica / gpus_per_node)
    nodes = replicas * nodes_per_replica
    return nodes, math.ceil(nodes / nodes_per_rack), float(nodes_per_replica)


def package(
    *,
    replicas: int,
    tp: int,
    pp: int = 1,
    gpus_per_node: int,
    nodes_per_rack: int,
    scale_up_domain_gpus: int,
    node_power_w: float,
    power_per_gpu_w: float,
    pue: float = 1.0,
    spare_nodes: int | None = None,
    headroom_frac: float | None = None,
    price_usd_per_gpu_hour: float | None = None,
    usd_per_kwh: float | None = None,
    output_tokens_per_s: float | None = None,
) -> Packaging:
    """Pack ``replicas`` replicas of ``tp x pp`` GPUs into nodes and racks; power (W) and cost (USD/h).

    ``node_power_w`` is the whole server (GPUs included) and must be at least
    ``gpus_per_node * power_per_gpu_w``. ``pue >= 1``. Give at most one of ``spare_nodes`` and
    ``headroom_frac`` (fraction of the replica-hosting nodes added as spares, rounded up).
    ``usd_per_million_output_tokens`` needs a price and ``output_tokens_per_s`` (achieved, whole fleet).
    Raises ``InputError`` (one line, with the numbers) for layouts that cannot be packaged.
    """
    _check_positive_ints(
        replicas=replicas, tp=tp, pp=pp, gpus_per_node=gpus_per_node, nodes_per_rack=nodes_per_rack,
        scale_up_domain_gpus=scale_up_domain_gpus,
    )
    if tp > scale_up_domain_gpus:
        raise InputError(
            f"tp={tp} does not fit the scale-up domain of {scale_up_domain_gpus} GPUs "
            f"(tensor parallelism needs one domain; use tp <= {scale_up_domain_gpus} and pipeline stages)"
        )
    if power_per_gpu_w < 0 or node_power_w < gpus_per_node * power_per_gpu_w:
        raise InputError(
            f"node power {node_power_w} W must include its {gpus_per_node} GPUs at {power_per_gpu_w} W each "
            f"(>= {gpus_per_node * power_per_gpu_w} W)"
        )
    if not pue >= 1.0:
        raise InputError(f"PUE must be >= 1, got {pue}")
    if spare_nodes is not None and headroom_frac is not None:
        raise InputError("give either spare_nodes or headroom_frac, not both")
    if spare_nodes is not None and (isinstance(spare_nodes, bool) or spare_nodes < 0):
        raise InputError(f"spare_nodes must be >= 0, got {spare_nodes}")
    if headroom_frac is not None and not 0.0 <= headroom_frac <= 1.0:
        raise InputError(f"headroom_frac must be in [0, 1], got {headroom_frac}")
    for name, value in (("price_usd_per_gpu_hour", price_usd_per_gpu_hour), ("usd_per_kwh", usd_per_kwh)):
        if value is not None and value < 0:
            raise InputError(f"{name} must be >= 0, got {value}")

    used_nodes, racks, nodes_per_replica = _layout_nodes(
        replicas, tp, pp, gpus_per_node, nodes_per_rack, scale_up_domain_gpus
    )
    spares = spare_nodes if spare_nodes is not None else math.ceil((headroom_frac or 0.0) * used_nodes)
    nodes = used_nodes + spares
    if spares:
        # Spares sit in free slots of the last rack first, then in new racks.
        free_slots = max(racks * nodes_per_rack - used_nodes, 0)
        racks += math.ceil(max(spares - free_slots, 0) / nodes_per_rack)
    gpus_provisioned = nodes * gpus_per_node
    it_power_w = nodes * node_power_w
    facility_power_w = it_power_w * pue

    usd_per_hour = energy_usd_per_hour = per_million_tokens = None
    if usd_per_kwh is not None:
        energy_usd_per_hour = w_to_kw(facility_power_w) * usd_per_kwh  # kW x 1 h x USD/kWh
    if price_usd_per_gpu_hour is not None:
        usd_per_hour = price_usd_per_gpu_hour * gpus_provisioned + (energy_usd_per_hour or 0.0)
        if output_tokens_per_s is not None and output_tokens_per_s > 0:
            per_million_tokens = per_million(per_hour_to_per_s(usd_per_hour) / output_tokens_per_s)
    return Packaging(
        replicas=replicas, gpus_per_replica=tp * pp, gpus=replicas * tp * pp,
        gpus_provisioned=gpus_provisioned, nodes=nodes, spare_nodes=spares, racks=racks,
        nodes_per_replica=nodes_per_replica, it_power_w=it_power_w,
        gpu_power_w=gpus_provisioned * power_per_gpu_w, facility_power_w=facility_power_w,
        usd_per_hour=usd_per_hour, energy_usd_per_hour=energy_usd_per_hour,
        usd_per_million_output_tokens=per_million_tokens,
    )
