"""evosuite's merge engine against mergekit 0.1.5, side by side on a seeded Llama-shaped zoo.

    python perf/merge_vs_mergekit.py [--quick] [--size 134m] [--dtype float32] [--repeats 3]
                                     [--mergekit-python /tmp/mergekit-venv/bin/python] [--json FILE]

Builds a base model and two fine-tunes (base + seeded noise; ``perf/synthetic.py``, no downloads;
default 134M parameters in float32, ``--size 1b --dtype bfloat16`` the ~1B family as 7B models are
shipped, ``--quick`` a mini one), then runs each method's config with
evosuite and, when a mergekit virtual environment is given, with ``mergekit-yaml``, interleaved and
repeated (median wall time). Every run is its own process, so its peak RSS comes from ``wait4``.
Prints wall times, the ratio to mergekit and to the I/O bound (reading the sources and writing the
result at page-cache speed), peak memory and the max abs difference of the two outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import DTYPES, SIZES  # noqa: E402

#: Targets: evosuite time / mergekit time at most this.
TARGETS = {"linear": 0.5, "task_arithmetic": 0.5, "ties": 0.25, "dare_ties": 0.25, "slerp": 0.5}
RANDOM = {"dare_ties"}


def build_zoo(root: Path, size: str, seed: int = 0, dtype: str = "float32") -> dict[str, Path]:
    """The seeded synthetic family of ``perf/synthetic.py`` in ``dtype``: a base and two fine-tunes."""
    from synthetic import build_family

    base, a, b = build_family(root, size, count=3, dtype=dtype, seed=seed)
    return {"base": base, "ft_a": a, "ft_b": b}


def configs(paths: dict[str, Path], dtype: str = "float32") -> dict[str, dict]:
    """The recipes, merging in ``dtype`` (the sources' dtype)."""
    base, a, b = (str(paths[k]) for k in ("base", "ft_a", "ft_b"))
    recipes = {
        "linear": {"merge_method": "linear",
                   "models": [{"model": base, "parameters": {"weight": 0.5}},
                              {"model": a, "parameters": {"weight": 0.3}},
                              {"model": b, "parameters": {"weight": 0.2}}]},
        "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": base,
                            "models": [{"model": a, "parameters": {"weight": [0.2, 0.8]}},
                                       {"model": b, "parameters": {"weight": 0.5}}],
                            "parameters": {"lambda": 0.9}},
        "ties": {"merge_method": "ties", "base_model": base,
                 "models": [{"model": a, "parameters": {"weight": 0.6, "density": [
                     {"filter": "self_attn", "value": 0.3}, {"value": 0.5}]}},
                            {"model": b, "parameters": {"weight": 0.4, "density": 0.7}}]},
        "dare_ties": {"merge_method": "dare_ties", "base_model": base,
                      "models": [{"model": a, "parameters": {"weight": 0.6, "density": 0.5}},
                                 {"model": b, "parameters": {"weight": 0.4, "density": 0.5}}]},
        "slerp": {"merge_method": "slerp", "base_model": base,
                  "models": [{"model": base}, {"model": a}],
                  "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                       {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}},
    }
    return {method: {**recipe, "dtype": dtype} for method, recipe in recipes.items()}


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    return wall, usage.ru_maxrss * 1024


def io_bound(paths: dict[str, Path], out: Path) -> float:
    """Seconds to read the three sources and write one model-sized file (page cache warm)."""
    files = [f for p in paths.values() for f in sorted(p.glob("*.safetensors"))]
    for f in files:  # warm the cache
        f.read_bytes()
    start = time.perf_counter()
    size = 0
    for f in files:
        with open(f, "rb") as h:
            while chunk := h.read(1 << 24):
                size += len(chunk)
    block = b"\0" * (1 << 24)
    with open(out, "wb") as h:
        for _ in range(0, size // len(files), len(block)):
            h.write(block)
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed


def max_diff(dir_a: Path, dir_b: Path) -> float:
    from safetensors import safe_open

    def tensors(d: Path):
        found = {}
        for f in sorted(d.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    found[k] = (f, k)
        return found

    ta, tb = tensors(dir_a), tensors(dir_b)
    if set(ta) != set(tb):
        return float("inf")
    worst = 0.0
    for k in ta:
        with safe_open(str(ta[k][0]), framework="pt") as ha, safe_open(str(tb[k][0]), framework="pt") as hb:
            x, y = ha.get_tensor(k).float(), hb.get_tensor(k).float()
        if x.shape != y.shape:
            return float("inf")
        worst = max(worst, float((x - y).abs().max()))
    return worst


EVOSUITE_RUN = ("import sys, torch; torch.set_num_threads(int(sys.argv[3]));"
                "from evosuite.merge import merge_from_config;"
                "merge_from_config(sys.argv[1], sys.argv[2], force=True, seed=0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny zoo (seconds)")
    ap.add_argument("--size", default="134m", choices=sorted(SIZES), help="the synthetic family (perf/synthetic.py)")
    ap.add_argument("--work", default=None, help="zoo and outputs folder (default: a temp dir)")
    ap.add_argument("--mergekit-python", default=None, help="python of a venv with mergekit==0.1.5")
    ap.add_argument("--dtype", default="float32", choices=DTYPES,
                    help="the sources' dtype and the recipes' (1b in float32 is 4.4 GB a model)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for evosuite")
    ap.add_argument("--methods", default=",".join(TARGETS))
    ap.add_argument("--json", default=None, help="write [{name, value, target, met}] here")
    args = ap.parse_args()
    size = "mini" if args.quick else args.size
    work = Path(args.work or tempfile.mkdtemp(prefix="evosuite-merge-perf-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, size, work)
    finally:
        if not args.work:  # a temp zoo and outputs: removed (a given --work folder is kept for reuse)
            shutil.rmtree(work, ignore_errors=True)


def run(args, size: str, work: Path) -> None:
    paths = build_zoo(work / f"zoo-{size}-{args.dtype}", size, dtype=args.dtype)
    cfgs = configs(paths, args.dtype)
    methods = [m for m in args.methods.split(",") if m]
    mergekit_yaml = None
    if args.mergekit_python:
        mergekit_yaml = str(Path(args.mergekit_python).parent / "mergekit-yaml")
    io = io_bound(paths, work / "io-probe.bin")

    times: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], int] = {}
    diffs: dict[str, str] = {}
    for rep in range(args.repeats):
        for method in methods:
            cfg_path = work / f"{method}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfgs[method], sort_keys=False))
            runs = [("evosuite", [sys.executable, "-c", EVOSUITE_RUN, str(cfg_path), str(work / f"out-evo-{method}"),
                                  str(args.threads)])]
            if mergekit_yaml:
                out = work / f"out-mk-{method}"
                runs.append(("mergekit", [mergekit_yaml, str(cfg_path), str(out), "--allow-crimes"]))
            if rep % 2:
                runs.reverse()  # interleave: neither tool always runs on a cooler machine
            for tool, cmd in runs:
                if tool == "mergekit":
                    shutil.rmtree(work / f"out-mk-{method}", ignore_errors=True)
                wall, peak = timed(cmd)
                times.setdefault((tool, method), []).append(wall)
                rss[(tool, method)] = max(rss.get((tool, method), 0), peak)
                print(f"rep {rep + 1} {method:16s} {tool:9s} {wall:7.2f} s  {peak / 1024**3:.2f} GiB", file=sys.stderr)
            evo_out, mk_out = work / f"out-evo-{method}", work / f"out-mk-{method}"
            if mergekit_yaml and rep == 0:
                diffs[method] = "random" if method in RANDOM else f"{max_diff(evo_out, mk_out):.2e}"
            for out in (evo_out, mk_out):  # outputs are not kept: a zoo in RAM (TMPDIR=/dev/shm) stays small
                shutil.rmtree(out, ignore_errors=True)

    from rich.console import Console
    from rich.table import Table

    label = size if args.dtype == "float32" else f"{size}_{args.dtype}"  # the figures' names: 134m, 1b_bfloat16
    table = Table(title=f"merge: evosuite vs mergekit 0.1.5 ({size} zoo in {args.dtype}, median of {args.repeats}, "
                        f"I/O bound {io:.2f} s, evosuite {args.threads} thread(s))")
    for col in ("method", "evosuite s", "mergekit s", "ratio", "target", "met", "evo peak GiB", "mk peak GiB",
                "max diff", "evo / I/O"):
        table.add_column(col, justify="right")
    results = []
    for method in methods:
        evo = statistics.median(times[("evosuite", method)])
        row = [method, f"{evo:.2f}"]
        if mergekit_yaml:
            mk = statistics.median(times[("mergekit", method)])
            ratio = evo / mk
            met = ratio <= TARGETS[method] and rss[("evosuite", method)] <= rss[("mergekit", method)]
            diff = diffs[method]
            row += [f"{mk:.2f}", f"{ratio:.3f}", f"<= {TARGETS[method]}", "yes" if met else "NO",
                    f"{rss[('evosuite', method)] / 1024**3:.2f}", f"{rss[('mergekit', method)] / 1024**3:.2f}",
                    diff]
            results.append({"name": f"merge_{method}_time_ratio_{label}", "value": round(ratio, 4),
                             "target": TARGETS[method], "met": bool(met)})
        else:
            row += ["-", "-", "-", "-", f"{rss[('evosuite', method)] / 1024**3:.2f}", "-", "-"]
        row.append(f"{evo / io:.1f}x")
        table.add_row(*row)
    Console(width=200).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
