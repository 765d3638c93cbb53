"""
Where the time goes: cProfile of ``learn`` split into its two phases (``collect_rollouts`` and ``train``), for
PPORollback on a shipped zoo entry and for SB3's PPO with the same hyperparameters (the throughput benchmark's
``zoo_*`` cases).

    python -m benchmarks.profile                                  # the three zoo cases, markdown on stdout
    python -m benchmarks.profile --cases zoo_cartpole --top 15 --out benchmarks/results/profile.md

Each phase lists its functions by own time (``tottime``), so the per-step and per-minibatch overheads stand out;
``env.step`` and the optimizer are given as cumulative times.
"""

import argparse
import cProfile
import io
import pstats
import time
from typing import Any

import torch as th

from benchmarks.throughput import Case, cases, side_env


def _profile_phases(model: Any, steps: int) -> tuple[dict[str, pstats.Stats], float]:
    """Run ``model.learn(steps)`` with one profiler per phase; return the stats and the wall-clock time."""
    profilers = {"collect_rollouts": cProfile.Profile(), "train": cProfile.Profile()}

    def wrap(name: str) -> None:
        method = getattr(model, name)

        def profiled(*args: Any, **kwargs: Any) -> Any:
            profilers[name].enable()
            try:
                return method(*args, **kwargs)
            finally:
                profilers[name].disable()

        setattr(model, name, profiled)

    wrap("collect_rollouts")
    wrap("train")
    start = time.perf_counter()
    model.learn(steps)
    elapsed = time.perf_counter() - start
    return {name: pstats.Stats(prof) for name, prof in profilers.items()}, elapsed


def _phase_total(stats: pstats.Stats) -> float:
    return sum(tt for (_, _, tt, _, _) in stats.stats.values())  # type: ignore[attr-defined]


def _cumtime(stats: pstats.Stats, name_part: str) -> float:
    """Largest cumulative time of a function whose ``file:function`` contains ``name_part``."""
    best = 0.0
    for (file, _, func), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name_part in f"{file}:{func}":
            best = max(best, ct)
    return best


def _top(stats: pstats.Stats, top: int) -> list[tuple[str, int, float]]:
    rows = []
    for (file, line, func), (_, nc, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = file.split("site-packages/")[-1].split("sb3_cherry/")[-1]
        rows.append((f"{short}:{line}({func})", nc, tt))
    rows.sort(key=lambda r: -r[2])
    return rows[:top]


def profile_case(case: Case, side: str, top: int) -> str:
    """Profile one side (``"ours"`` or ``"sb3"``) of a case; return a markdown section."""
    model = (case.ours if side == "ours" else case.baseline)(side_env(case, side))
    phases, elapsed = _profile_phases(model, case.steps)
    model.get_env().close()
    out = io.StringIO()
    label = "sb3_cherry" if side == "ours" else "SB3"
    out.write(f"### {case.name}: {label} ({type(model).__name__}), {case.steps} steps, {elapsed:.2f} s under cProfile\n\n")
    totals = {name: _phase_total(st) for name, st in phases.items()}
    whole = sum(totals.values())
    collect = phases["collect_rollouts"]
    out.write(
        f"- collection {totals['collect_rollouts']:.2f} s ({100 * totals['collect_rollouts'] / whole:.0f}%), "
        f"of which env.step {_cumtime(collect, 'vec_env/base_vec_env.py:step'):.2f} s, "
        f"policy forward {_cumtime(collect, 'policies.py:forward'):.2f} s, "
        f"buffer add {_cumtime(collect, 'buffers.py:add'):.2f} s\n"
    )
    train = phases["train"]
    out.write(
        f"- training {totals['train']:.2f} s ({100 * totals['train'] / whole:.0f}%), "
        f"of which minibatch sampling {_cumtime(train, 'buffers.py:_get_samples'):.2f} s, "
        f"evaluate_actions {_cumtime(train, 'evaluate_actions'):.2f} s, "
        f"backward {_cumtime(train, '_tensor.py:backward'):.2f} s, "
        f"clip_grad_norm_ {_cumtime(train, 'clip_grad_norm_'):.2f} s, "
        f"optimizer step {_cumtime(train, 'optimizer.py:wrapper'):.2f} s\n\n"
    )
    for name, stats in phases.items():
        out.write(f"{name}, top {top} by own time:\n\n| function | calls | own s |\n|---|---|---|\n")
        for func, calls, tt in _top(stats, top):
            out.write(f"| `{func}` | {calls} | {tt:.3f} |\n")
        out.write("\n")
    return out.getvalue()


def main() -> None:
    """Profile the selected cases (both sides) and print or write the markdown summary."""
    import sb3_cherry  # noqa: F401  (registers the sb3_cherry/ envs)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=["zoo_cartpole", "zoo_hopper", "zoo_bipedal"])
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", default=None, help="markdown file (default: stdout)")
    args = parser.parse_args()
    th.set_num_threads(1)
    sections = []
    for case in cases():
        if case.name in args.cases:
            for side in ("sb3", "ours"):
                sections.append(profile_case(case, side, args.top))
                print(sections[-1], flush=True)
    if args.out:
        with open(args.out, "w") as file:
            file.write("\n".join(sections))


if __name__ == "__main__":
    main()
