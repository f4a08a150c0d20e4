"""Every solver on the 30 official MDP instances (NVlabs/MDP solver inputs, ResNet-50/101).

Prints one row per (instance, solver): objective, gap to the proven optimum from
reference_solutions.json, status and wall seconds (best of --repeat runs), then per solver the
number of instances solved to the reference optimum, the median and max seconds, and the
speed-ups of ``exact`` over ``milp`` (measured in this run) and over MindtPy (the wall times
*recorded* in reference_solutions.json, from another 2-core machine). Plans are re-evaluated by
Problem.evaluate, independently of the solvers.

    .venv/bin/python benchmarks/solver_official.py [DIR] [--solvers exact milp greedy mindtpy]
        [--instances 00 05 ...] [--repeat 3] [--time-limit 600] [--json OUT.json]

DIR defaults to benchmarks/instances/mdp_official_resnet50 (a copy of
shared/benchmarks/mdp_official_resnet50 that travels with the repository).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from mdp_trt.solve import SOLVERS, load_problem, solve
from mdp_trt.solve.mindtpy import mindtpy_unavailable_reason

DEFAULT_DIR = Path(__file__).resolve().parent / "instances" / "mdp_official_resnet50"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--solvers", nargs="+", default=["exact", "milp", "greedy", "mindtpy"], choices=list(SOLVERS))
    parser.add_argument("--instances", nargs="+", default=None, help="step numbers, e.g. 00 05 (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per (instance, solver); the best time is kept")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()

    reference = json.loads((args.dir / "reference_solutions.json").read_text())["steps"]
    steps = args.instances or sorted(reference)
    solvers = list(args.solvers)
    if "mindtpy" in solvers and (reason := mindtpy_unavailable_reason()):
        print(f"skipping mindtpy: {reason}")
        solvers.remove("mindtpy")

    rows = []
    print(f"{'instance':>8} {'solver':>8} {'objective':>10} {'gap':>9} {'status':>10} {'seconds':>9}")
    for step in steps:
        problem = load_problem(args.dir / f"step_{step}.json")
        optimum = reference[step]["optimum"]["objective"]
        for name in solvers:
            best_time = float("inf")
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                plan = solve(problem, name, args.time_limit)
                best_time = min(best_time, time.perf_counter() - t0)
            ev = problem.evaluate(plan.options, plan.blocks) if plan.options else None
            objective = ev.objective if ev is not None and ev.feasible else None
            gap = None if objective is None else (optimum - objective) / optimum
            rows.append(
                {"instance": step, "solver": name, "objective": objective, "optimum": optimum, "gap": gap,
                 "status": plan.status, "seconds": best_time, "at_optimum": objective == optimum}
            )
            gap_text = "-" if gap is None else f"{gap:.2e}"
            print(f"{step:>8} {name:>8} {objective!s:>10} {gap_text:>9} {plan.status:>10} {best_time:>9.3f}")

    print()
    print(f"{'solver':>8} {'optimal':>8} {'median s':>9} {'max s':>8}")
    medians = {}
    for name in solvers:
        mine = [r for r in rows if r["solver"] == name]
        times = [r["seconds"] for r in mine]
        medians[name] = statistics.median(times)
        hits = sum(r["at_optimum"] for r in mine)
        print(f"{name:>8} {hits:>4}/{len(mine):<3} {medians[name]:>9.3f} {max(times):>8.3f}")
    if "exact" in medians and "milp" in medians:
        print(f"speed-up exact vs milp (median, this run): {medians['milp'] / medians['exact']:.1f}x")
    recorded = [reference[s]["mindtpy_rerun"]["wall_s"] for s in steps if reference[s].get("mindtpy_rerun", {}).get("wall_s")]
    if "exact" in medians and recorded:
        rec = statistics.median(recorded)
        hits = sum(
            reference[s]["mindtpy_rerun"].get("objective") == reference[s]["optimum"]["objective"] for s in steps
        )
        print(
            f"MindtPy as RECORDED in reference_solutions.json (another 2-core machine): median {rec:.3f} s, "
            f"{hits}/{len(steps)} at the optimum; speed-up exact vs recorded MindtPy (median): {rec / medians['exact']:.0f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
