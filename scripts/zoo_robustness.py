"""Does the evolved merge beat every source and the best hand recipe on any CPU? The zoo's robustness table.

    python scripts/zoo_robustness.py --json robustness.json                 # the full grid (hours on 2 cores)
    python scripts/zoo_robustness.py --seeds 0 1 --kernels native --threads 1 --plugins vlm

For each zoo seed, CPU kernel setting (torch's ``ATEN_CPU_CAPABILITY``: the machine's own, ``avx2`` or
``default``, the kernels another CPU would run) and torch thread count, the zoo is built in its own cache
(``--cache-root``/<kernel>-t<threads>, so float differences of the build are part of the cell) with that seed
(``EVOSUITE_ZOO_SEED``), and each plugin's default experiment runs with the same seed: ``evosuite run --plugin
P --seed S``. Each cell reads the run's ``summary.json``: the merge's held-out score, its margin over the best
source and over the best baseline (mergekit's hand recipes, scored on the same items). The table ends with the
min / median / max of both margins per plugin, the numbers the README reports.

A cell that fails (a build that cannot find a world, a run that exits non-zero) is a row with its error, not a
crash; ``--json`` is rewritten after every cell, so a stopped grid keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

KERNELS = ("native", "avx2", "default")
PLUGINS = ("vlm", "llm", "clip")


def cell_env(kernel: str, threads: int, seed: int, cache_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if kernel != "native":
        env["ATEN_CPU_CAPABILITY"] = kernel
    env.update({"EVOSUITE_CACHE": str(cache_root / f"{kernel}-t{threads}"), "EVOSUITE_ZOO_SEED": str(seed),
                "OMP_NUM_THREADS": str(threads), "EVOSUITE_THREADS": str(threads)})
    return env


def margins(summary: dict) -> dict:
    """The merge's held-out score and its margins over the best source and the best baseline."""
    scores = summary["test_scores"]
    sources = [s["name"] if isinstance(s, dict) else s for s in summary["sources"]]
    best_source = max(sources, key=lambda name: scores[name])
    return {"merged": scores["merged"], "best_source": best_source,
            "over_sources": scores["merged"] - scores[best_source],
            "best_baseline": summary.get("best_baseline"),
            "over_baseline": summary.get("margin_over_best_baseline")}


def run_cell(plugin: str, seed: int, kernel: str, threads: int, cache_root: Path, work: Path) -> dict:
    row = {"plugin": plugin, "seed": seed, "kernel": kernel, "threads": threads}
    run_dir = work / f"{plugin}-s{seed}-{kernel}-t{threads}"
    cmd = [sys.executable, "-m", "evosuite", "run", "--plugin", plugin, "--seed", str(seed), "--threads",
           str(threads), "--run-dir", str(run_dir), "--plain", "--no-save-model"]
    start = time.time()
    proc = subprocess.run(cmd, env=cell_env(kernel, threads, seed, cache_root), capture_output=True, text=True)
    row["seconds"] = round(time.time() - start)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        row["error"] = errors[-1] if errors else f"exit {proc.returncode}"
        return row
    row.update(margins(json.loads((run_dir / "summary.json").read_text())))
    return row


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):+.3f} / {statistics.median(values):+.3f} / {max(values):+.3f}"


def report(rows: list[dict], console: Console) -> None:
    table = Table(title="evolved merge vs best source and best baseline (held-out split)")
    for col in ("plugin", "seed", "kernel", "threads", "merged", "over best source", "over best baseline", "s"):
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(r["plugin"], str(r["seed"]), r["kernel"], str(r["threads"]), "[red]failed", r["error"][:60],
                          "", str(r["seconds"]))
            continue
        over_base = "-" if r["over_baseline"] is None else f"{r['over_baseline']:+.3f} ({r['best_baseline']})"
        table.add_row(r["plugin"], str(r["seed"]), r["kernel"], str(r["threads"]), f"{r['merged']:.3f}",
                      f"{r['over_sources']:+.3f} ({r['best_source']})", over_base, str(r["seconds"]))
    console.print(table)
    summary = Table(title="margins, min / median / max over the cells")
    for col in ("plugin", "cells", "failed", "over best source", "over best baseline", "all beat both"):
        summary.add_column(col)
    for plugin in dict.fromkeys(r["plugin"] for r in rows):
        done = [r for r in rows if r["plugin"] == plugin and "error" not in r]
        failed = sum(1 for r in rows if r["plugin"] == plugin and "error" in r)
        over_b = [r["over_baseline"] for r in done if r["over_baseline"] is not None]
        wins = all(r["over_sources"] > 0 and (r["over_baseline"] or 0) > 0 for r in done) and not failed
        summary.add_row(plugin, str(len(done)), str(failed), spread([r["over_sources"] for r in done]),
                        spread(over_b), "yes" if wins and done else "no")
    console.print(summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--plugins", nargs="+", choices=PLUGINS, default=list(PLUGINS))
    ap.add_argument("--cache-root", type=Path, default=None,
                    help="where each kernel/thread setting keeps its zoos (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here (rewritten after each cell)")
    args = ap.parse_args(argv)
    console = Console()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="evosuite-robustness-") as tmp:
        cache_root = args.cache_root or Path(tmp) / "cache"
        for kernel in args.kernels:
            for threads in args.threads:
                for seed in args.seeds:
                    for plugin in args.plugins:
                        row = run_cell(plugin, seed, kernel, threads, cache_root, Path(tmp))
                        rows.append(row)
                        console.print(row)
                        if args.json:
                            args.json.write_text(json.dumps(rows, indent=1))
    report(rows, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
