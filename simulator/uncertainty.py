"""Uncertainty of a sizing: an optimistic and a pessimistic case of a deployment, for an interval on GPUs.

``fleetsim size`` re-sizes the best candidate in both cases and reports ``gpus_p05`` (optimistic) and
``gpus_p95`` (pessimistic) beside ``gpus``. A few sizings at quantiles, not a bootstrap. Two sources:

1. Calibration residuals, r = log(measured / predicted) of the calibration rows (``calibration.yaml``) of
   the deployment's group (accelerator / compute family / framework), else of its architecture pool,
   else of all rows (an accelerator without measured rows, e.g. an announced one: the overall spread of
   the model stands in); and of the rows of the deployment's benchmark model on every accelerator
   (``model_factors.<model>.residuals``). The interval takes the
   wider of the two at each end (``residual_bounds``): the group's rows measure how one accelerator's
   systems scatter, the model's how one model's submissions scatter (DeepSeek-R1's: +-25-30%), and a new
   system is exposed to both. Measured on the 550 rows of leave-one-system-out (``validate --cv system``,
   each fold's own calibration setting the interval): the wider of the two holds 88% of the measured
   values inside p05-p95 (DeepSeek-R1 83%, Interactive rows 71%) against the nominal 90%; the group's
   quantiles alone held ~82% (DeepSeek-R1 ~66%; estimated with the all-rows calibration's quantiles).
   A deployment whose group (new hardware) or model the calibration has no rows of is not like anything
   measured: its interval is widened further to the calibration's forecast residuals of that kind
   (``calibration.forecast_residuals``: fits on older rounds against the newer rounds' rows of hardware or
   models they had not seen; x0.52 to x1.58 for new hardware on the shipped data). At quantile q the
   efficiency fractions are multiplied by exp(r_q) (clipped to 1) and both overheads divided by it
   (``Efficiency.scaled_by_residual``), applied to the deployment's own efficiency. Throughput
   scales about as exp(r), so q = 0.95 (measured above predicted) gives the optimistic case, ``gpus_p05``,
   and q = 0.05 the pessimistic one, ``gpus_p95``.
2. Announced hardware (``status: announced``): figures whose sources disagree carry a (lo, hi) range.
   The optimistic case takes the favourable end of every ranged figure that bears on the deployment's
   throughput (high HBM capacity and bandwidth, the tensor peaks of its GEMM and attention formats; with
   more than one GPU per replica, high interconnect bandwidths and low all-reduce latency), the
   pessimistic case the other end.
   Ranges of shipping hardware are not used: its residuals were measured with the profile's figures.

The two combine at the corners (favourable residual with favourable figures), so an announced part's
interval is wide on purpose. The optimistic case is a lower bound and the pessimistic one an upper
bound (``Variant.bound``): the table clamps them to bracket ``gpus`` when a case within the search
tolerance of the answer lands a replica on the other side (``SizingResult.cases`` keep their answers).
Residual quantiles of 0 and no ranges give cases identical to the deployment: the interval collapses to
``gpus`` (the planner then reuses the answer without simulating).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator import calibration, units
from simulator.deployment import Deployment
from simulator.efficiency import calibration_key
from simulator.errors import InputError
from simulator.formats import Precision, gemm_compute_family
from simulator.variants import Variant

QUANTILES: tuple[float, float] = (0.05, 0.95)  # residual quantiles of the pessimistic and optimistic cases
# Ranged figures that bear on throughput (besides the tensor peaks), by which end is favourable;
# COMMUNICATION ones only matter with more than one GPU per replica.
HIGHER_IS_BETTER: tuple[str, ...] = (
    "hbm_capacity_bytes",
    "hbm_bandwidth_bytes_per_s",
    "scaleup_bandwidth_bytes_per_s",
    "scaleup_link_bandwidth_bytes_per_s",
    "scaleout_bandwidth_bytes_per_s",
)
LOWER_IS_BETTER: tuple[str, ...] = ("allreduce_latency_s",)
COMMUNICATION: tuple[str, ...] = (
    "scaleup_bandwidth_bytes_per_s",
    "scaleup_link_bandwidth_bytes_per_s",
    "scaleout_bandwidth_bytes_per_s",
    "allreduce_latency_s",
)
ALL_ROWS = "all calibration rows"


@dataclass(frozen=True)
class Spread:
    """Where a deployment's interval comes from.

    ``source``: the calibration entry whose residuals are used (a group key such as 'mi355x/fp4/vllm',
    'architecture:<arch>', ``ALL_ROWS``, or '' without calibration residuals), over ``num_rows`` rows;
    ``model``/``model_rows``: the benchmark model whose rows' residuals widen it ('' / 0: none);
    ``log_residual_low``/``_high`` at quantiles ``q_low``/``q_high`` (log measured/predicted, so
    exp(.) is a throughput factor; the wider of the two sources at each end); ``figure_ranges``: (SI
    figure key, lo, hi) of the announced hardware's ranged figures that the cases vary (empty for
    shipping hardware)."""

    hardware: str
    source: str
    num_rows: int
    q_low: float
    q_high: float
    log_residual_low: float
    log_residual_high: float
    figure_ranges: tuple[tuple[str, float, float], ...] = ()
    model: str = ""
    model_rows: int = 0
    forecast: tuple[str, ...] = ()  # forecast residual kinds that widened it (``residual_bounds``)

    @property
    def optimistic_tag(self) -> str:
        """Tag of the optimistic case (its GPUs are the low quantile): 'p05' for q_high = 0.95."""
        return _tag(1.0 - self.q_high)

    @property
    def pessimistic_tag(self) -> str:
        """Tag of the pessimistic case: 'p95' for q_low = 0.05."""
        return _tag(1.0 - self.q_low)

    def note(self) -> str:
        """One line for the user, e.g. 'calibration residual quantiles of mi355x/fp4/vllm (28 rows: ...)'."""
        lo, hi = self.log_residual_low, self.log_residual_high
        parts = []
        if self.source:
            parts.append((
                f"{ALL_ROWS} (none of {self.hardware}'s architecture)" if self.source == ALL_ROWS
                else f"the group {self.source}" if self.source.count("/") == 2
                else f"the pool {self.source}"
            ) + f" ({self.num_rows:,} MLPerf rows)")
        if self.model:
            parts.append(f"the model {self.model} ({self.model_rows:,} rows)")
        what = f"the wider of {parts[0]} and {parts[1]}" if len(parts) == 2 else "".join(parts)
        if self.forecast:
            kinds = " and ".join(kind.replace("_", " ") for kind in self.forecast)
            what += (f"{', ' if what else ''}widened to how far fits on older rounds missed newer rounds' "
                     f"{kinds}")
        if what:
            text = (
                f"calibration residual quantiles q={self.q_low:g}/{self.q_high:g} of {what}: "
                f"measured/predicted x{math.exp(lo):.2f} to x{math.exp(hi):.2f}"
            )
        else:
            text = "no calibration residuals (calibration.yaml has none)"
        if self.figure_ranges:
            names = ", ".join(key for key, _, _ in self.figure_ranges)
            text += f"; plus the ranges of {self.hardware}'s announced figures ({names})"
        return text


def _tag(q: float) -> str:
    return f"p{round(units.frac_to_pct(q)):02d}"


def _residual_table(document: Mapping[str, Any], group: str, architecture: str
                    ) -> tuple[str, int, Mapping[str, float]]:
    """(source, rows, {'p05': r, ...}) of the first entry with residuals (see the module docstring)."""
    groups = document.get("groups", {}) or {}
    for key in (group, f"architecture:{architecture}"):
        entry = groups.get(key, {}) or {}
        stats = entry.get("residuals")
        if stats and entry.get("n_rows", 0) >= calibration.MIN_GROUP_ROWS:
            return key, int(entry["n_rows"]), stats["log_residual_quantiles"]
    meta = document.get("meta", {}) or {}
    overall = (meta.get("overall") or {}).get("log_residual_quantiles")
    if overall:
        return ALL_ROWS, int(meta.get("n_rows", 0)), overall
    return "", 0, {}


def _model_table(document: Mapping[str, Any], model_id: str) -> tuple[int, Mapping[str, float]]:
    """(rows, {'p05': r, ...}) of the benchmark model's calibration rows ((0, {}) without them)."""
    entry = ((document.get("model_factors") or {}).get(model_id) or {})
    stats = entry.get("residuals") or {}
    return int(entry.get("n_rows", 0)), stats.get("log_residual_quantiles") or {}


@dataclass(frozen=True)
class ResidualBounds:
    """Log residual quantiles at the interval's two ends and where they come from (``residual_bounds``);
    ``forecast``: the kinds of forecast residuals that widened them ('new_hardware', 'new_model')."""

    source: str
    num_rows: int
    model: str
    model_rows: int
    low: float
    high: float
    forecast: tuple[str, ...] = ()


def residual_bounds(document: Mapping[str, Any], group: str, architecture: str, model_id: str,
                    quantiles: tuple[float, float] = QUANTILES) -> ResidualBounds:
    """Log residuals at ``quantiles`` (low, high) for a deployment of calibration group ``group`` (key
    'accelerator/family/framework') and benchmark model ``model_id``: at each end the wider of the group's
    (else its architecture pool's, else all rows') and the model's rows; and when the calibration has no
    rows of the group (new hardware) or of the model (a new model), also its forecast residuals of that
    kind (``calibration.forecast_residuals``: how far fits on older rounds missed the newer rounds' new
    hardware / new models). Invariant: low <= every used source's low quantile, high >= every high one."""
    source, num_rows, table = _residual_table(document, group, architecture)
    model_rows, model_table = _model_table(document, model_id)
    tables = [table, model_table]
    forecast = (document.get("meta") or {}).get("forecast") or {}
    kinds = tuple(kind for kind, new in (("new_hardware", source != group), ("new_model", not model_table))
                  if new and kind in forecast)
    tables = [t for t in tables + [forecast[kind]["log_residual_quantiles"] for kind in kinds] if t]
    low = min((_at(t, quantiles[0]) for t in tables), default=0.0)
    high = max((_at(t, quantiles[1]) for t in tables), default=0.0)
    if not model_table:
        model_id, model_rows = "", 0
    return ResidualBounds(source, num_rows, model_id, model_rows, low, high, kinds)


def _at(table: Mapping[str, float], q: float) -> float:
    """Linear interpolation between stored quantiles (clamped outside); 0 without any."""
    if not table:
        return 0.0
    xs = np.asarray([units.pct_to_frac(int(k[1:])) for k in table])
    ys = np.asarray(list(table.values()), dtype=float)
    order = np.argsort(xs)
    return float(np.interp(q, xs[order], ys[order]))


def _ranged_figures(dep: Deployment) -> tuple[tuple[str, float, float], ...]:
    """(key, lo, hi) of the announced accelerator's ranged figures that bear on ``dep``'s throughput."""
    acc = dep.accelerator
    if not acc.is_announced:
        return ()
    kv = dep.precision.kv_cache
    families = {dep.compute_family, gemm_compute_family(Precision(kv, kv, kv), acc.supported_compute_formats)}
    peaks = {f"peak_{family}_flops_per_s" for family in families}
    keys = {k for k, _, _ in acc.ranges}
    out = []
    for key, lo, hi in acc.ranges:
        relevant = (
            (key in HIGHER_IS_BETTER or key in LOWER_IS_BETTER or key in peaks)
            and (dep.layout.gpus > 1 or key not in COMMUNICATION)
        )
        # on a mesh, a ranged per-GPU total re-derives the link figure: vary the total only
        if key == "scaleup_link_bandwidth_bytes_per_s" and "scaleup_bandwidth_bytes_per_s" in keys:
            relevant = False
        if relevant and hi > lo:
            out.append((key, lo, hi))
    return tuple(out)


def spread(
    dep: Deployment,
    *,
    document: Mapping[str, Any] | None = None,
    quantiles: tuple[float, float] = QUANTILES,
    use_ranges: bool = True,
) -> Spread:
    """The residual quantiles and figure ranges behind ``dep``'s interval (``document``: a calibration
    document, default the shipped ``calibration.yaml``; ``quantiles``: (low, high), 0 < low < high < 1)."""
    q_low, q_high = quantiles
    if not 0.0 < q_low < q_high < 1.0:
        raise InputError(f"interval quantiles must satisfy 0 < low < high < 1, got {q_low} and {q_high}")
    doc = calibration.load_calibration() if document is None else document
    acc = dep.accelerator
    bounds = residual_bounds(doc, calibration_key(acc.id, dep.compute_family, dep.framework),
                             acc.architecture, dep.model.id, quantiles)
    return Spread(
        hardware=acc.id,
        source=bounds.source,
        num_rows=bounds.num_rows,
        q_low=q_low,
        q_high=q_high,
        log_residual_low=bounds.low,
        log_residual_high=bounds.high,
        figure_ranges=_ranged_figures(dep) if use_ranges else (),
        model=bounds.model,
        model_rows=bounds.model_rows,
        forecast=bounds.forecast,
    )


def _overrides(dep: Deployment, ranges: tuple[tuple[str, float, float], ...], optimistic: bool
               ) -> tuple[tuple[str, float], ...]:
    out = []
    for key, lo, hi in ranges:
        value = hi if (key not in LOWER_IS_BETTER) == optimistic else lo
        if value != dep.accelerator.figure(key):
            out.append((key, value))
    return tuple(out)


def cases(dep: Deployment, sp: Spread) -> dict[str, Variant]:
    """{optimistic tag: case, pessimistic tag: case} of ``dep`` (see the module docstring)."""
    note = sp.note()
    return {
        tag: Variant(dep.efficiency.scaled_by_residual(r), _overrides(dep, sp.figure_ranges, good), note,
                     bound="low" if good else "high")
        for tag, r, good in (
            (sp.optimistic_tag, sp.log_residual_high, True),
            (sp.pessimistic_tag, sp.log_residual_low, False),
        )
    }


class IntervalVariants:
    """The planner's ``efficiency_variants`` hook for the interval: ``deployment -> cases``.

    Loads the calibration document once (``document`` None: the shipped one)."""

    def __init__(
        self,
        document: Mapping[str, Any] | None = None,
        quantiles: tuple[float, float] = QUANTILES,
        use_ranges: bool = True,
    ) -> None:
        self.document = calibration.load_calibration() if document is None else document
        self.quantiles, self.use_ranges = quantiles, use_ranges

    def spread(self, dep: Deployment) -> Spread:
        """See :func:`spread`."""
        return spread(dep, document=self.document, quantiles=self.quantiles, use_ranges=self.use_ranges)

    def __call__(self, dep: Deployment) -> dict[str, Variant]:
        return cases(dep, self.spread(dep))
