"""Seconds per in-memory candidate merge (the PS space's DARE-TIES), this tree against a git revision, interleaved.

    python perf/candidate_merge_speed.py [--size 134m] [--dtype float32] [--baseline main] [--reps 5]
                                         [--keep-draws]

Builds the synthetic family of ``--size`` (perf/synthetic.py: a base and two fine-tunes) in memory, in
``--dtype`` (float32; bfloat16 as real checkpoints ship, merged into a bfloat16 candidate), and merges
one seeded genome per repetition (global granularity: one density and weight per source) with
``TaskVectorMerger`` of this tree and of ``--baseline`` (its ``in_memory.py`` and ``task_arithmetic.py``
read with ``git show`` and loaded beside this tree's), alternating which goes first. ``--keep-draws``: this
tree's merger keeps the random draws (the first candidate draws them). Reports the median wall and CPU
seconds of each and whether their merged tensors are identical. One thread; the machine is assumed shared,
hence the interleaving and the CPU times.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))
from synthetic import DTYPES  # noqa: E402

BASELINE_FILES = {"in_memory": "suite/merge/in_memory.py",
                  "task_arithmetic": "plugins/merge_methods/task_arithmetic.py"}


def load_baseline(revision: str, tmp: Path):
    """The baseline's merger module and its method module, loaded under private names."""
    modules = {}
    for key, path in BASELINE_FILES.items():
        source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
        file = tmp / f"baseline_{key}.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(f"baseline_{key}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[key] = module
    return modules["in_memory"], modules["task_arithmetic"]


def family(size: str, dtype: str = "float32"):
    """Base and two fine-tunes of the synthetic family in ``dtype``, in memory (the recipe of synthetic.py)."""
    import torch
    from synthetic import _draw, parameter_shapes

    models = [{}, {}, {}]
    for name, shape in parameter_shapes(size).items():
        base = torch.ones(shape) if name.endswith("norm.weight") else _draw(shape, 0, 0, name).mul_(0.02)
        models[0][name] = base
        for k in (1, 2):
            models[k][name] = base + _draw(shape, 0, k, name).mul_(0.01)
    wanted = getattr(torch, dtype)
    return [{name: t.to(wanted) for name, t in m.items()} for m in models]


GLOBAL = {"rescale": True, "normalize": False, "lambda": 1.0, "int8_mask": False}


def class_named(module, name: str):
    return next(obj for obj in vars(module).values() if getattr(obj, "name", None) == name and isinstance(obj, type))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="134m", help="a size of perf/synthetic.py (mini, tiny, 134m, 1b)")
    ap.add_argument("--baseline", default="main", help="git revision to compare against")
    ap.add_argument("--dtype", default="float32", choices=DTYPES,
                    help="the models' dtype (the merge computes in float32 either way)")
    ap.add_argument("--reps", type=int, default=5, help="candidates merged by each (median reported)")
    ap.add_argument("--method", default="dare_ties", help="a method of the task-arithmetic family")
    ap.add_argument("--seed", type=int, default=0, help="the merge seed (a search's: one for every candidate)")
    ap.add_argument("--keep-draws", action="store_true", help="this tree's merger keeps the random draws")
    args = ap.parse_args()
    import numpy as np
    import torch

    import evosuite.merge.in_memory as current_merger
    import evosuite.plugins.merge_methods.task_arithmetic as current_methods

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="evosuite-merge-speed-") as tmp:
        baseline_merger, baseline_methods = load_baseline(args.baseline, Path(tmp))
    base, a, b = family(args.size, args.dtype)
    out = {"current": {k: torch.empty_like(v) for k, v in base.items()},
           "baseline": {k: torch.empty_like(v) for k, v in base.items()}}
    method = class_named(current_methods, args.method)()
    kept = {"keep_draws": True} if args.keep_draws else {}
    mergers = {"current": current_merger.TaskVectorMerger(base, [a, b], method, **kept),
               "baseline": baseline_merger.TaskVectorMerger(base, [a, b],
                                                            class_named(baseline_methods, args.method)())}
    rng = np.random.RandomState(0)
    wall = {k: [] for k in mergers}
    cpu = {k: [] for k in mergers}
    worst, identical = 0.0, True
    for rep in range(args.reps):
        density, weight = rng.uniform(0.1, 1.0, 2), rng.uniform(0.0, 2.0, 2)
        per_source = [{"density": float(density[i]), "weight": float(weight[i])} for i in range(2)]
        order = ["current", "baseline"] if rep % 2 == 0 else ["baseline", "current"]
        for key in order:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            mergers[key].merge_into(out[key], lambda name, p=per_source: (p, GLOBAL), seed=args.seed)
            wall[key].append(time.perf_counter() - start_wall)
            cpu[key].append(time.process_time() - start_cpu)
        for name, x in out["current"].items():
            y = out["baseline"][name]
            scale = float(y.abs().max()) or 1.0
            worst = max(worst, float((x - y).abs().max()) / scale)
            identical = identical and torch.equal(x, y)
        print(f"rep {rep}: current {wall['current'][-1]:.3f} s, baseline {wall['baseline'][-1]:.3f} s (wall)",
              flush=True)
    params = sum(v.numel() for v in base.values())
    print(f"{args.method}, {args.size} synthetic family ({params / 1e6:.0f}M parameters, {args.dtype}, 2 sources), "
          f"{args.reps} candidates each, {torch.get_num_threads()} thread")
    for key in ("baseline", "current"):
        print(f"  {key:9s} median {statistics.median(wall[key]):.3f} s wall, {statistics.median(cpu[key]):.3f} s cpu")
    print(f"  speed-up (median wall) {statistics.median(wall['baseline']) / statistics.median(wall['current']):.2f}x, "
          f"(median cpu) {statistics.median(cpu['baseline']) / statistics.median(cpu['current']):.2f}x")
    print(f"  identical tensors: {identical}; largest difference / tensor's max |value|: {worst:.2e}")
    if args.keep_draws:
        print(f"  kept draws: {mergers['current'].extra_bytes() / 2**20:.0f} MiB held by this tree's merger")


if __name__ == "__main__":
    main()
