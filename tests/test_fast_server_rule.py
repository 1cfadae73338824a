"""The fast evaluator's Server/Interactive rule: a p99 of per-request TPOT, checked against closed forms and
against the simulation it stands in for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import mlperf, replay


def test_normal_tail_matches_erfc() -> None:
    z = np.linspace(-6.0, 6.0, 241)
    exact = np.array([0.5 * math.erfc(v / math.sqrt(2.0)) for v in z])
    assert np.max(np.abs(replay.normal_tail(z) - exact)) < 2e-7


def test_equal_spreads_give_the_normal_quantile() -> None:
    """Every request with the same TPOT sd sigma: the p99 holds iff mean + z_0.99 sigma <= limit."""
    sd = np.full(100, 0.004)
    assert replay.tail_headroom_s(sd) == pytest.approx(2.3263478740 * 0.004, rel=1e-6)
    assert replay.tail_headroom_s(np.zeros(100)) == 0.0


@given(st.lists(st.floats(1e-4, 0.05), min_size=5, max_size=30), st.floats(1e-4, 0.05), st.integers(0, 4))
def test_more_spread_allows_a_lower_mean(sds: list[float], extra: float, index: int) -> None:
    base = np.array(sds)
    wider = base.copy()
    wider[index] += extra
    a, b = replay.tail_headroom_s(base), replay.tail_headroom_s(wider)
    assert b >= a - 1e-12 and a >= 0.0
    # the mixture's tail at the answer is the target (1% of requests over mean + headroom)
    tail = float(np.mean(replay.normal_tail(a / base)))
    assert tail == pytest.approx(replay.TPOT_TAIL_FRAC, rel=1e-6)


@settings(deadline=None, max_examples=40)
@given(st.sampled_from(["llama2-70b", "llama3.1-405b", "gpt-oss-120b", "deepseek-r1"]), st.floats(0.0, 1.0),
       st.floats(1e-9, 1e-3))
def test_tabulated_rule_matches_the_exact_one(model_id: str, theta: float, total_var_s2: float) -> None:
    """The hot path's table (h^2 in theta, ``allowed_mean_step_s``) gives the exact rule's headroom within
    1e-4 relative, at any mix of the two variance sources and any scale."""
    lens = replay.lengths(model_id)
    k = np.maximum(np.asarray(lens.output_quantiles) - 1.0, 1.0)
    sd = np.sqrt(total_var_s2 * ((1.0 - theta) / k + theta * np.asarray(lens.batch_averaging)))
    exact = replay.tail_headroom_s(sd)
    table = 0.2 - replay.allowed_mean_step_s((total_var_s2 * (1.0 - theta), total_var_s2 * theta), 0.2, lens)
    assert table == pytest.approx(exact, rel=1e-4)
    assert replay.allowed_mean_step_s((0.0, 0.0), 0.2, lens) == 0.2


def test_batch_averaging_closed_form_for_equal_lives() -> None:
    """Lives all k steps: r(t) = 1 - t/k, so the life-averaged number in system keeps (2/k^2) int (k-t)^2/k dt
    = 2/3 of its variance."""
    out = replay._batch_averaging(np.full(20, 400.0))
    assert out[0] == pytest.approx(2.0 / 3.0, rel=1e-3)


def test_fast_server_rate_agrees_with_the_simulated_search() -> None:
    """gpt-oss-120b Interactive on 8x B200 (the 15 ms TPOT limit binds): the old rule (mean step <= 0.85 x
    limit) was 1.9x below what the simulation's LoadGen-like search sustains; the p99 rule is within 10%."""
    ttft_s, tpot_s = mlperf.slo_limits_s("gpt-oss-120b", "interactive")
    key = replay.PartKey("b200", "gpt-oss-120b", "fp4", "trtllm", "interactive", 8, 8, ttft_s, tpot_s)
    best = replay.best_layout(key, None)
    assert best is not None
    dep, _plan, fast, _ = best
    full = replay.simulate_server(dep, key, replay.lengths(key.model_id), fast, seed=0)
    assert 0.9 < full["steady_tokens_per_s"] / fast < 1.1


@settings(deadline=None, max_examples=40)
@given(st.floats(1e-3, 0.05), st.floats(1e-6, 1e-3), st.floats(5.0, 400.0))
def test_decode_batch_variance_is_the_insensitive_processor_sharing_law(a_s: float, slope_s: float,
                                                                         batch: float) -> None:
    """pi(n) ~ prod_{k<=n} x (a + slope k) / k, with x set so that the mean is ``batch``: its variance,
    summed numerically, equals the closed form; slope 0 is Poisson."""
    n = np.arange(0, 10000)
    k = np.arange(1, 10000)
    step_s = a_s + slope_s * batch

    def law(x: float) -> np.ndarray:
        logp = np.concatenate([[0.0], np.cumsum(np.log(x * (a_s + slope_s * k) / k))])
        p = np.exp(logp - logp.max())
        return p / p.sum()

    lo, hi = 0.0, 1.0 / slope_s
    for _ in range(100):   # the x whose law has mean ``batch``
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(np.sum(n * law(mid))) < batch else (lo, mid)
    p = law(0.5 * (lo + hi))
    var = float(np.sum(n * n * p) - np.sum(n * p) ** 2)
    assert replay.decode_batch_variance(batch, step_s, slope_s) == pytest.approx(var, rel=2e-3)
    assert replay.decode_batch_variance(batch, step_s, 0.0) == batch
