"""DES speed benchmark: 60 s of a Llama-2-70B fleet serving ~1M output tokens/s.

~3,400 requests/s (MLPerf llama2-70b token lengths, Poisson arrivals) over 90 MI355X fp4 replicas
at TP1, least-outstanding router, one process. Prints a human line, then as its last line one JSON
object: wall_s, simulated_s, completed_requests, simulated_output_tokens_per_wall_s (plus context).
Target on the 2-core reference machine: wall <= 10 s (>= 6M simulated output tokens per wall-second).

Run: python benchmarks/des_speed.py [--router NAME] [--replicas N] [--rate R] [--duration S]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from simulator.deployment import Layout, make_deployment
from simulator.efficiency import lookup_efficiency
from simulator.fleet import simulate
from simulator.hardware import load_accelerator
from simulator.units import KIB, MIB, s_to_us
from simulator.workload import PoissonArrivals, Workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=90)
    parser.add_argument("--rate", type=float, default=3400.0, help="requests/s")
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds of arrivals")
    parser.add_argument("--router", default="least-outstanding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # Default (uncalibrated) efficiencies keep the offered load and the fleet's operating point fixed
    # whatever the calibration file says: this benchmark measures simulator speed, not accuracy.
    acc = load_accelerator("mi355x")
    eff = lookup_efficiency(acc.id, acc.architecture, "fp4", "vllm", calibration={})
    dep = make_deployment("llama2-70b", acc, "fp4", Layout(tp=1), efficiency=eff, step_time_scale=1.0)
    workload = Workload(arrivals=PoissonArrivals(rate_per_s=args.rate), benchmark="llama2-70b")
    seqs = np.random.SeedSequence(args.seed).spawn(3)
    requests = workload.generate(
        args.duration, np.random.default_rng(seqs[0]), np.random.default_rng(seqs[1])
    )
    start = time.perf_counter()
    result = simulate(
        dep,
        requests,
        num_replicas=args.replicas,
        router=args.router,
        seed=seqs[2],
        duration_s=args.duration,
        warmup_s=min(0.2 * args.duration, 30.0),
    )
    wall_s = time.perf_counter() - start
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    peak_rss_mib = rss_kib * KIB / MIB if sys.platform.startswith("linux") else None
    summary = result.summary().to_dict()
    done = ~np.isnan(result.records.finish_at_s)
    tokens = int(result.records.output_tokens[done].sum())
    figures = {
        "wall_s": round(wall_s, 3),
        "simulated_s": round(result.end_at_s, 3),
        "completed_requests": int(done.sum()),
        "simulated_output_tokens_per_wall_s": round(tokens / wall_s),
        "simulated_output_tokens": tokens,
        "steady_output_tokens_per_s": round(summary["steady_output_tokens_per_s"]),
        "replica_steps": result.steps,
        "wall_us_per_replica_step": round(s_to_us(wall_s / max(result.steps, 1)), 2),
        "router": args.router,
        "replicas": args.replicas,
        "offered_requests_per_s": args.rate,
        "ttft_p99_s": summary["ttft_p99_s"],
        "tpot_p99_s": summary["tpot_p99_s"],
        "peak_rss_mib": None if peak_rss_mib is None else round(peak_rss_mib, 1),
    }
    print(
        f"simulated {figures['simulated_s']:.1f} s of {args.replicas} replicas "
        f"({figures['steady_output_tokens_per_s']:,} output tokens/s steady) in {wall_s:.2f} s wall: "
        f"{figures['simulated_output_tokens_per_wall_s']:,} simulated output tokens per wall-second"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
