"""Exact-solver scaling on generated deep chains (64 options per group), with the MILP for reference.

Chains of 10, 25, 100, 200 and 300 groups (mdp_trt.solve.generate.chain_instance, seeded),
budget 50% of the dense latency. Prints per size: the exact solver's status and seconds, and the
MILP's (only up to --milp-max groups, under --milp-time-limit; HiGHS may overrun its limit while
solving the root LP of the large models) with its gap to the exact optimum.

Then ResNet-structured instances (generate.resnet_instance, e.g. ResNet-50 with 16-channel groups:
65-option residual groups), exact and MILP.

    .venv/bin/python benchmarks/solver_scaling.py [--sizes 10 25 100 200 300] [--options 64]
        [--seeds 0] [--milp-max 25] [--milp-time-limit 60] [--resnets 50:32 50:16 18:8]
"""

from __future__ import annotations

import argparse
import time

from mdp_trt.solve import load_problem, solve
from mdp_trt.solve.generate import chain_instance, resnet_instance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10, 25, 100, 200, 300])
    parser.add_argument("--options", type=int, default=64)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--milp-max", type=int, default=25, help="largest size the MILP is run on")
    parser.add_argument("--milp-time-limit", type=float, default=60.0)
    parser.add_argument("--resnets", nargs="*", default=["50:32", "50:16", "18:8"],
                        help="DEPTH:GROUP_SIZE ResNet-structured instances (exact and milp)")
    args = parser.parse_args()
    print(f"{'groups':>6} {'seed':>4} {'exact status':>12} {'exact s':>8} {'objective':>10} {'milp status':>11} {'milp s':>8} {'milp gap':>9}")
    for n in args.sizes:
        for seed in args.seeds:
            problem = load_problem(chain_instance(n, args.options, seed=seed, budget_fraction=args.budget))
            t0 = time.perf_counter()
            plan = solve(problem, "exact")
            seconds = time.perf_counter() - t0
            milp_status, milp_s, milp_gap = "-", "-", "-"
            if n <= args.milp_max:
                t0 = time.perf_counter()
                milp = solve(problem, "milp", args.milp_time_limit)
                milp_s = f"{time.perf_counter() - t0:.2f}"
                milp_status = milp.status
                if milp.objective is not None and plan.objective:
                    milp_gap = f"{(plan.objective - milp.objective) / plan.objective:.1e}"
            print(f"{n:>6} {seed:>4} {plan.status:>12} {seconds:>8.2f} {plan.objective!s:>10} {milp_status:>11} {milp_s:>8} {milp_gap:>9}", flush=True)

    if args.resnets:
        print()
        print(f"{'resnet':>6} {'gs':>4} {'seed':>4} {'exact status':>12} {'exact s':>8} {'objective':>10} {'milp status':>11} {'milp s':>8} {'milp gap':>9}")
    for spec in args.resnets:
        depth, group_size = (int(x) for x in spec.split(":"))
        for seed in args.seeds:
            problem = load_problem(resnet_instance(depth, group_size, seed=seed, budget_fraction=args.budget))
            t0 = time.perf_counter()
            plan = solve(problem, "exact")
            seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            milp = solve(problem, "milp", args.milp_time_limit)
            milp_s = time.perf_counter() - t0
            gap = "-" if milp.objective is None else f"{(plan.objective - milp.objective) / plan.objective:.1e}"
            print(f"{depth:>6} {group_size:>4} {seed:>4} {plan.status:>12} {seconds:>8.2f} {plan.objective!s:>10} "
                  f"{milp.status:>11} {milp_s:>8.2f} {gap:>9}", flush=True)


if __name__ == "__main__":
    main()
