"""The performance suite: runs P1-P6 side by side, each in its own process, and prints one table.

    python perf/run_all.py [--quick] [--only P2,P3] [--zoo DIR] [--size tiny,134m]
                           [--args 'P1:--mergekit-python PY'] [--json FILE]

Each script prints its own table (shown as it runs) and writes its figures as JSON; this collects them
into one table of ``name, value, target, met`` (and, with ``--json``, one JSON list with a ``suite``
field naming the script). ``--size`` (comma-separated: tiny, 134m, 1b) is passed to the scripts that
measure at several model sizes (P2, P5); each of their figures' names ends with the size it was
measured at (P1's too). A script that fails is a row saying so, and the exit status is 1. ``--quick`` is
the smoke mode CI runs: tiny models, seconds per script, figures not meaningful.

P1 merge engine vs mergekit   perf/merge_vs_mergekit.py
P2 evolution speed            perf/evolution_speed.py
P3 batched generation         perf/batched_generation.py
P4 DFS forward overhead       perf/dfs_forward.py
P5 Ray utilization, memory    perf/ray_utilization.py
P6 search efficiency          perf/search_efficiency.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "P1": ("merge engine vs mergekit", "merge_vs_mergekit.py"),
    "P2": ("evolution speed", "evolution_speed.py"),
    "P3": ("batched generation", "batched_generation.py"),
    "P4": ("DFS forward", "dfs_forward.py"),
    "P5": ("Ray utilization and memory", "ray_utilization.py"),
    "P6": ("search efficiency", "search_efficiency.py"),
}
TAKES_ZOO = {"P2", "P3", "P5"}
TAKES_SIZE = {"P2", "P5"}


def run_script(key: str, quick: bool, zoo: str | None, extra: list[str], timeout: int,
               size: str | None = None) -> tuple[list[dict], str]:
    _, script = SCRIPTS[key]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, str(HERE / script), "--json", str(out), *(["--quick"] if quick else [])]
        if zoo and key in TAKES_ZOO:
            cmd += ["--zoo", zoo]
        if size and key in TAKES_SIZE:
            cmd += ["--size", size]
        cmd += extra
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        except subprocess.TimeoutExpired:
            return [], f"timed out after {timeout} s"
        seconds = time.perf_counter() - start
        print(f"\n===== {key}: {' '.join(cmd[1:])} ({seconds:.0f} s, exit {proc.returncode})")
        print(proc.stdout.rstrip())
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return [], f"exit {proc.returncode}: {tail[:200]}"
        return json.loads(out.read_text()), ""


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke mode: every script with --quick")
    ap.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated keys (default: P1,P2,P3,P4,P5,P6)")
    ap.add_argument("--zoo", default=None, help="a built zoo directory for P2, P3 and P5")
    ap.add_argument("--size", default=None, help="model sizes for P2 and P5, e.g. tiny,134m (default: theirs)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per script")
    ap.add_argument("--args", action="append", default=[], metavar="KEY:ARGS",
                    help="extra arguments for one script, e.g. --args 'P5:--no-ray' or "
                         "--args 'P1:--mergekit-python /tmp/mergekit-venv/bin/python' (repeatable)")
    ap.add_argument("--json", default=None, help="write every figure here, with its suite key")
    args = ap.parse_args()
    keys = [k.strip().upper() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCRIPTS]
    if unknown:
        ap.error(f"unknown script {unknown[0]} (known: {', '.join(SCRIPTS)})")
    extras: dict[str, list[str]] = {}
    for spec in args.args:
        key, _, rest = spec.partition(":")
        extras.setdefault(key.strip().upper(), []).extend(rest.split())
    figures: list[dict] = []
    failed = False
    for key in keys:
        extra = extras.get(key, [])
        results, error = run_script(key, args.quick, args.zoo, extra, args.timeout, args.size)
        if error:
            failed = True
            figures.append({"suite": key, "name": f"{SCRIPTS[key][1]} failed", "value": error, "target": None,
                            "met": False})
        elif not results:
            hint = " (P1 compares only with --args 'P1:--mergekit-python PY')" if key == "P1" else ""
            figures.append({"suite": key, "name": f"{SCRIPTS[key][1]}: no figures{hint}", "value": None,
                            "target": None, "met": False})
        figures += [{"suite": key, **r} for r in results]
    print(f"\n===== evosuite performance suite{' (quick smoke mode: figures not meaningful)' if args.quick else ''}")
    widths = [4, 60, 14, 10, 6]
    print("  ".join(h.ljust(w) for h, w in zip(("", "figure", "value", "target", "met"), widths)))
    for f in figures:
        print("  ".join(s.ljust(w) for s, w in zip((f["suite"], f["name"], fmt(f["value"]), fmt(f["target"]),
                                                     "yes" if f["met"] else "NO"), widths)))
    met = sum(bool(f["met"]) for f in figures)
    print(f"{met} of {len(figures)} targets met")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
