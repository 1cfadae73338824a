"""Other cases of a sized candidate: the same candidate re-sized with other efficiency factors and/or
hardware figures (e.g. the optimistic and pessimistic cases of :mod:`simulator.uncertainty`).

The planner's hook ``efficiency_variants(deployment) -> {tag: Efficiency | Variant}`` names the cases;
:func:`size_variants` re-sizes the best row (per hardware with ``group_by_hardware``) in each case,
after the ranking, and :func:`with_case_columns` adds ``gpus_<tag>`` next to ``gpus`` in every row
(None where not computed or infeasible; a case marked as a lower / upper ``bound`` is clamped to at most /
at least ``gpus``). A case re-sizes more cheaply than the candidate
(:func:`size_variant`): its one-replica search starts next to the candidate's answer, and its fleet
search starts at the pooling-corrected estimate and looks only upward. A case identical to the
deployment reuses its answer without simulating.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simulator.candidate_search import (
    CandidateResult,
    Found,
    Hooks,
    Message,
    Overrides,
    deployment_of,
    finish_one,
    search_one,
)
from simulator.candidates import Bounds
from simulator.deployment import Deployment
from simulator.efficiency import Efficiency
from simulator.scenario import Scenario


@dataclass(frozen=True)
class Variant:
    """One case of a candidate: its efficiency factors (None: the deployment's own) and SI hardware figure
    overrides (``Accelerator.with_overrides`` keys; empty: the profile's). ``note`` says where the case
    comes from (shown to the user). ``bound``: 'low' for a case that needs no more GPUs than the candidate
    by construction (an optimistic one), 'high' for one that needs no fewer, '' when either may hold.
    Picklable (crosses process boundaries)."""

    efficiency: Efficiency | None = None
    accelerator_overrides: Overrides = ()
    note: str = ""
    bound: str = ""


EfficiencyVariants = Callable[[Deployment], Mapping[str, "Efficiency | Variant"]]
CaseProgress = Callable[[int, str, str, bool], None]  # (total, label, message, finished)
Runner = Callable[[list[Any], Callable[[Any], Any], int, Callable[[int, Any], None]], list[Any]]


@dataclass(frozen=True)
class VariantCase:
    """One candidate re-sized in one case (``tag``, e.g. 'p95'): its GPUs and replicas, or ``reason``
    when infeasible (its own answer, unclamped); ``note`` and ``bound`` as in its :class:`Variant`;
    ``num_evaluations`` its simulations."""

    label: str
    hardware: str
    precision: str
    layout: str
    tag: str
    feasible: bool
    gpus: int | None
    replicas: int | None
    reason: str | None
    note: str
    num_evaluations: int
    bound: str = ""


def size_variant(
    sc: Scenario,
    found: Found,
    variant: Variant,
    verify_ratio: float | None,
    hooks: Hooks | None = None,
    message: Message | None = None,
    workers: int = 1,
) -> CandidateResult:
    """Size ``found``'s candidate again as ``variant`` (planner steps 1-4), no curve; cheaper than the
    candidate:

    - the one-replica search starts from the candidate's own rate scaled by the ratio of the analytic
      guesses (variant / candidate), close to the answer, so it takes few evaluations;
    - ``verify_ratio`` (the candidate's verified / estimated replicas; None: it was not verified, and
      neither is the variant): the fleet search starts at ``ceil(variant estimate * verify_ratio)`` and
      looks only at or above it, so one fleet run usually settles it. The answer is the smallest passing
      fleet from there: the minimum, or a replica or so above it (never below it)."""
    hooks = dataclasses.replace(hooks or Hooks(), curve_fractions=())
    base_guess_per_s = found.bounds.rate_guess_per_s

    def guess(bounds: Bounds) -> float:
        return found.rate_per_s * bounds.rate_guess_per_s / base_guess_per_s

    searched = search_one(
        sc, found.candidate, hooks, message, efficiency=variant.efficiency,
        overrides=variant.accelerator_overrides, rate_guess_per_s=guess,
    )
    if isinstance(searched, CandidateResult):
        return searched
    if verify_ratio is None:
        return finish_one(sc, searched, False, hooks, message)
    start = max(1, math.ceil(searched.estimate * verify_ratio))
    return finish_one(sc, searched, True, hooks, message, workers=workers, verify_from=start)


def _variant_job(args: tuple[Scenario, Found, Variant, float | None]) -> CandidateResult:
    return size_variant(*args)


def verify_ratio(row: Mapping[str, Any]) -> float | None:
    """Verified / estimated replicas of a verified row (what the router's pooling saved), else None."""
    if not row.get("verified") or not row.get("estimated_replicas"):
        return None
    return row["replicas"] / row["estimated_replicas"]


def size_variants(
    sc: Scenario,
    ranked: list[dict[str, Any]],
    found: list[Found],
    finished: Mapping[int, CandidateResult],
    variants_of: EfficiencyVariants,
    hooks: Hooks,
    *,
    workers: int,
    run: Runner,
    progress: CaseProgress | None = None,
    group_by_hardware: bool = False,
) -> list[VariantCase]:
    """Re-size the best of ``ranked`` (per hardware with ``group_by_hardware``) in each case of
    ``variants_of``. ``found[i]`` / ``finished[i]``: each searched candidate and its result; ``run(jobs,
    fn, workers, on_done)`` maps ``fn`` over jobs in ``workers`` processes (the planner's pool)."""
    say = progress or (lambda total, label, message, finished: None)
    index = {(f.candidate.hardware, f.candidate.precision, f.candidate.layout.label()): i
             for i, f in enumerate(found)}
    chosen: dict[str, int] = {}
    for row in ranked:
        group = row["hardware"] if group_by_hardware else ""
        if row.get("feasible") and group not in chosen:
            chosen[group] = index[(row["hardware"], row["precision"], row["layout"])]
    todo: list[tuple[int, str, Variant, bool]] = []  # (found index, tag, case, identical to the deployment)
    for i in chosen.values():
        own = deployment_of(sc, found[i]).efficiency
        for tag, v in variants_of(deployment_of(sc, found[i])).items():
            case = v if isinstance(v, Variant) else Variant(efficiency=v)
            same = not case.accelerator_overrides and case.efficiency in (None, own)
            todo.append((i, tag, case, same))
    run_ks = [k for k, item in enumerate(todo) if not item[3]]
    res: dict[int, CandidateResult] = {}
    total = len(run_ks)

    def label(k: int) -> str:
        return f"{found[todo[k][0]].candidate.label} {todo[k][1]}"

    def done(j: int, r: CandidateResult) -> None:
        res[run_ks[j]] = r
        msg = f"{r.row['gpus']:,} GPUs" if r.row["feasible"] else f"infeasible: {r.row['reason']}"
        say(total, label(run_ks[j]), msg, True)

    jobs = [(sc, found[todo[k][0]], todo[k][2], verify_ratio(finished[todo[k][0]].row)) for k in run_ks]
    if workers <= 1 or len(jobs) <= 1:
        for j, (_, f, v, ratio) in enumerate(jobs):
            lb = label(run_ks[j])
            done(j, size_variant(sc, f, v, ratio, hooks, lambda m, lb=lb: say(total, lb, m, False),
                                 workers=workers))
    else:
        run(jobs, _variant_job, workers, done)
    cases = []
    for k, (i, tag, v, same) in enumerate(todo):
        row = finished[i].row if same else res[k].row
        cand = found[i].candidate
        ok = bool(row["feasible"])
        cases.append(VariantCase(
            label=cand.label, hardware=cand.hardware, precision=cand.precision, layout=cand.layout.label(),
            tag=tag, feasible=ok, gpus=row.get("gpus") if ok else None,
            replicas=row.get("replicas") if ok else None, reason=None if ok else row["reason"], note=v.note,
            num_evaluations=0 if same else int(row.get("num_evaluations") or 0), bound=v.bound,
        ))
    return cases


def _column(case: VariantCase | None, gpus: int | None) -> int | None:
    """A case's GPUs for the table, clamped to its ``bound`` side of the candidate's ``gpus``: a case
    within the search tolerance of the candidate can land a replica on the other side."""
    if case is None or case.gpus is None or gpus is None or not case.bound:
        return None if case is None else case.gpus
    return min(case.gpus, gpus) if case.bound == "low" else max(case.gpus, gpus)


def with_case_columns(rows: list[dict[str, Any]], cases: list[VariantCase]) -> list[dict[str, Any]]:
    """Rows with ``gpus_<tag>`` right after ``gpus`` (at the end when a row has none): the case's GPUs
    (clamped to its ``bound`` side of ``gpus``) for re-sized rows, None elsewhere."""
    tags = list(dict.fromkeys(c.tag for c in cases))
    by_row = {(c.hardware, c.precision, c.layout, c.tag): c for c in cases}
    out = []
    for row in rows:
        key = (row["hardware"], row["precision"], row["layout"])
        extra = {f"gpus_{t}": _column(by_row.get((*key, t)), row.get("gpus")) for t in tags}
        new: dict[str, Any] = {}
        for key, value in row.items():
            new[key] = value
            if key == "gpus":
                new.update(extra)
        out.append(new if "gpus" in row else {**row, **extra})
    return out
