"""Shared fixtures: small deployments, stub step models with known service times, Poisson request sets."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.deployment import Deployment, Layout, make_deployment
from simulator.iteration import StepModel
from simulator.workload import RequestSet


class FixedStepModel(StepModel):
    """Every step with work takes exactly ``service_s`` seconds (deterministic service: M/D/1)."""

    def __init__(self, dep: Deployment, service_s: float) -> None:
        super().__init__(dep)
        self.service_s = service_s

    def step_time_s(self, prefill_tokens: float, prefill_pairs_full: float, prefill_pairs_sliding: float,
                    decode_seqs: float, decode_ctx_full: float, decode_ctx_sliding: float,
                    decode_query_tokens: float | None = None) -> float:
        return self.service_s if prefill_tokens + decode_seqs > 0 else 0.0


class ExponentialStepModel(StepModel):
    """Every step with work takes an exponential time of mean ``mean_s`` drawn from ``rng`` (M/M/1).
    ``draws_s`` keeps the service times in the order they were drawn."""

    def __init__(self, dep: Deployment, mean_s: float, rng: np.random.Generator) -> None:
        super().__init__(dep)
        self.mean_s = mean_s
        self.rng = rng
        self.draws_s: list[float] = []

    def step_time_s(self, prefill_tokens: float, prefill_pairs_full: float, prefill_pairs_sliding: float,
                    decode_seqs: float, decode_ctx_full: float, decode_ctx_sliding: float,
                    decode_query_tokens: float | None = None) -> float:
        if prefill_tokens + decode_seqs <= 0:
            return 0.0
        draw = float(self.rng.exponential(self.mean_s))
        self.draws_s.append(draw)
        return draw


@pytest.fixture(scope="session")
def stub_models() -> tuple[type[FixedStepModel], type[ExponentialStepModel]]:
    """(FixedStepModel, ExponentialStepModel)."""
    return FixedStepModel, ExponentialStepModel


@pytest.fixture(scope="session")
def llama8b() -> Deployment:
    """llama3.1-8b fp8 on one H100 (~1M tokens of KV), default scheduler limits."""
    return make_deployment("llama3.1-8b", "h100", "fp8")


@pytest.fixture(scope="session")
def llama8b_batch1() -> Deployment:
    """The same with batch size 1: a single-server FIFO queue when every request is one step."""
    return make_deployment("llama3.1-8b", "h100", "fp8", max_num_seqs=1)


@pytest.fixture(scope="session")
def gpt_oss() -> Deployment:
    """gpt-oss-120b fp8 on two H100s: 18 sliding-window layers (window 128) plus 18 full layers."""
    return make_deployment("gpt-oss-120b", "h100", "fp8", Layout(tp=2))


def _poisson_requests(rate_per_s: float, num_requests: int, rng: np.random.Generator, *,
                      input_tokens: int = 1, output_tokens: int = 1) -> RequestSet:
    arrival_at_s = np.cumsum(rng.exponential(1.0 / rate_per_s, num_requests))
    return RequestSet(arrival_at_s, np.full(num_requests, input_tokens, dtype=np.int64),
                      np.full(num_requests, output_tokens, dtype=np.int64))


@pytest.fixture(scope="session")
def poisson_requests():
    """Factory ``(rate_per_s, num_requests, rng, *, input_tokens=1, output_tokens=1) -> RequestSet``."""
    return _poisson_requests
