"""P5: Ray worker utilization over an evolution with 2 workers, and peak memory of a PS run per merge method.

    python perf/ray_utilization.py [--quick] [--size tiny,134m] [--methods all] [--workers 2] [--budget N]
                                   [--zoo DIR] [--no-ray] [--json FILE]

Utilization: a whole run through ``evosuite.runner.run_experiment`` with ``workers: 2`` (a local Ray
started here): the zoo's VLM experiment (test zoo; ``--quick``: tiny random models and the toy test
benchmark). Utilization is the workers' busy time (evaluating) over workers x the span from the stage's
first dispatch to its last result: the gaps between generations (the driver telling the optimizer and
asking the next generation) and each generation's tail (the last candidates finishing while the other
worker has nothing left) count as idle. Worker start-up (Ray, loading the sources) is reported apart.
Skipped, and said so, when Ray is not installed.

Peak memory, per size of the synthetic family (``perf/synthetic.py``: tiny ~25M, 134m, 1b parameters;
tiny and 134m in float32, 1b in bfloat16) and per merge method the PS space can search: a fresh process
loads M sources (and the base, for methods that need one) as a run does (weights whose dtype matches
their safetensors files stay memory-mapped: transformers maps them), builds the PS space and merges and runs three
candidates. A sampling thread reads the process's anonymous resident memory (``RssAnon``) every
millisecond; the figure is its peak above the same process's after imports, over one model's weight
bytes at the run's dtype. Target: M + 1. File-backed pages (the mapped sources, as far as they are
paged in) are shown beside it, as is the merge time per candidate.
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
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "perf"))

UTIL_TARGET = 0.90
#: the run's dtype per size: bfloat16 at 1b keeps the measurement inside this machine's memory
SIZE_DTYPE = {"tiny": "float32", "134m": "float32", "1b": "bfloat16"}


def _status_kib(*fields: str) -> dict[str, int]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in fields:
            found[key] = int(line.split()[1])
    return found


class PeakSampler:
    """Samples RssAnon and RssFile of this process every ``interval`` seconds on a thread; keeps the peaks."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.peak_anon = self.peak_file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        now = _status_kib("RssAnon", "RssFile", "RssShmem")
        self.peak_anon = max(self.peak_anon, now.get("RssAnon", 0))
        # mapped files on a tmpfs (TMPDIR=/dev/shm) are shared memory, not file pages: both count as mapped
        self.peak_file = max(self.peak_file, now.get("RssFile", 0) + now.get("RssShmem", 0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def searchable_methods() -> list[str]:
    """The merge methods a PS space can search: those with per-model search parameters."""
    from evosuite.plugin_manager import get_host

    return [name for name, method in get_host().registry("methods") if getattr(method, "search_parameters", ())]


def memory_child(paths: list[str], dtype: str, method: str) -> None:
    """Runs in a fresh process: load the sources (+ base) as a run does, build the PS space, merge and run
    three candidates; print the peaks as JSON."""
    import gc

    import torch

    from evosuite.models import load_model
    from evosuite.plugin_manager import get

    torch.set_num_threads(1)
    method_cls = get("methods", method)
    # Warm-up: the first load imports the adapters and plugins; that memory is not the run's.
    warm = load_model(paths[0], dtype=dtype)
    model_bytes = sum(t.numel() * t.element_size() for t in warm.mergeable_parameters().values())
    get("spaces", "ps")
    del warm
    gc.collect()
    baseline = _status_kib("RssAnon", "RssFile", "RssShmem")
    merge_seconds = []
    with PeakSampler() as sampler:
        base = load_model(paths[0], dtype=dtype) if method_cls.requires_base else None
        sources = [load_model(p, dtype=dtype) for p in paths[1:]]
        space = get("spaces", "ps")(sources, [f"s{k}" for k in range(len(sources))], base, sources[-1], seed=0,
                                    method=method, granularity="global")
        rng = torch.Generator().manual_seed(0)
        for _ in range(3):
            genome = torch.rand(space.dimension, generator=rng).tolist()
            start = time.perf_counter()
            candidate = space.candidate(genome)
            merge_seconds.append(time.perf_counter() - start)
            candidate.generate(["ab:", "cd:"], max_new_tokens=4, batch_size=2)
            sampler.sample()
    print(json.dumps({"peak_anon_bytes": (sampler.peak_anon - baseline["RssAnon"]) * 1024,
                      "peak_file_bytes": (sampler.peak_file - baseline["RssFile"] - baseline.get("RssShmem", 0)) * 1024,
                      "model_bytes": model_bytes, "merge_seconds": statistics.median(merge_seconds),
                      "held_by_merger": space._merger.extra_bytes()}))


def measure_memory(paths: list[Path], dtype: str, method: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--_memory-child", dtype, method, *map(str, paths)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{method}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quick_config(tmp: Path) -> dict:
    """Tiny random models and the toy benchmark of the test suite, installed as a plugin for the workers."""
    from tests import toy_plugin
    from tests.conftest import write_fake_distribution
    from tests.factories import write_llm

    site = write_fake_distribution(tmp / "site", "evosuite-toy", "evosuite_toy", Path(toy_plugin.__file__).read_text())
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    models = {n: str(write_llm(tmp / n, seed=s)) for n, s in (("base", 0), ("a", 1), ("b", 2))}
    return {"sources": [{"name": "a", "model": models["a"]}, {"name": "b", "model": models["b"]}],
            "base_model": models["base"], "benchmark": {"name": "toy-echo", "options": {"items": 12}}, "seed": 0}


def zoo_config(zoo: str | None) -> dict:
    from evosuite.plugins.zoo.build import build_zoo
    from evosuite.plugins.zoo.experiments import space_spec

    root = Path(zoo) if zoo else build_zoo("test", seed=0, progress=lambda m: print(m, file=sys.stderr))
    world = json.loads((root / "zoo.json").read_text())["worlds"]["zoo-ja-vqa"]
    return {"sources": [{"name": "ja-lm", "model": str(root / world["ja"])},
                        {"name": "en-vlm", "model": str(root / world["vlm"])}],
            "base_model": str(root / world["base"]), "carrier": "en-vlm",
            "benchmark": {"name": "zoo-ja-vqa", "options": {"data_dir": str(root)}}, "space": space_spec("ps"),
            "seed": 0, "test_limit": 50}


def measure_utilization(args, tmp: Path) -> dict | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return None
    from evosuite.config import parse_config
    from evosuite.plugin_manager import reset_host
    from evosuite.runner import run_experiment
    from evosuite.tui import make_reporter

    data = quick_config(tmp) if args.quick else zoo_config(args.zoo)
    reset_host()
    data.update(budget=args.budget or (8 if args.quick else 32), workers=args.workers)
    start = time.perf_counter()
    summary = run_experiment(parse_config(data), tmp / "run", make_reporter(quiet=True), save_model=False)
    stats = summary["evaluation"]["ps"]
    stats["total_seconds"] = time.perf_counter() - start
    stats["evaluations"] = summary["evaluations"]
    return stats


def memory_rows(args) -> tuple[list[tuple], list[dict]]:
    from synthetic import build_family, parameter_count

    m = args.sources
    target = m + 1
    rows, results = [], []
    sizes = ["mini"] if args.quick else [x.strip() for x in args.size.split(",") if x.strip()]
    for size in sizes:
        dtype = SIZE_DTYPE.get(size, "float32")
        methods = (["dare_ties", "linear"] if args.quick and args.methods == "all"
                   else searchable_methods() if args.methods == "all" else args.methods.split(","))
        tmp = Path(tempfile.mkdtemp(prefix=f"evosuite-p5-{size}-"))
        try:
            paths = build_family(tmp, size, count=m + 1, dtype=dtype)
            params = parameter_count(size)
            for method in methods:
                mem = measure_memory(paths, dtype, method)
                ratio = mem["peak_anon_bytes"] / mem["model_bytes"]
                met = ratio <= target
                rows.append((f"PS {method} peak anonymous memory / model ({size})", f"{ratio:.2f}x",
                             f"<= {target}x (M + 1)", "yes" if met else f"NO (over by {ratio - target:.2f} models)",
                             f"{mem['peak_file_bytes'] / mem['model_bytes']:.2f}x",
                             f"{mem['merge_seconds']:.2f} s"))
                results.append({"name": f"p5_ps_{method}_peak_memory_models_{size}", "value": round(ratio, 3),
                                "target": target, "met": met})
                results.append({"name": f"p5_ps_{method}_merge_seconds_{size}", "value": round(mem["merge_seconds"], 3),
                                "target": None, "met": True})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append((f"  one model ({size}: {params / 1e6:.0f}M parameters, {dtype})",
                     f"{mem['model_bytes'] / 2**20:.1f} MiB", "", "", "", ""))
    return rows, results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_memory-child":
        memory_child(sys.argv[4:], sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models (about a minute: Ray's start-up dominates)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=int, default=None, help="evaluations of the run (default 32, quick 8)")
    ap.add_argument("--sources", type=int, default=2, help="M, the sources of the memory measurement")
    ap.add_argument("--size", default="tiny", help="comma-separated family sizes of the memory measurement: "
                                                   "tiny, 134m, 1b (--quick: a mini one)")
    ap.add_argument("--methods", default="all", help="comma-separated merge methods (default: every one a PS "
                                                     "space can search; --quick: dare_ties,linear)")
    ap.add_argument("--zoo", default=None, help="a built zoo directory (default: build or reuse the test zoo)")
    ap.add_argument("--no-ray", action="store_true", help="skip the utilization run")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    ap.add_argument("--json", default=None, help="write [{name, value, target, met}] here")
    args = ap.parse_args()
    results, rows = [], []
    tmp = Path(tempfile.mkdtemp(prefix="evosuite-p5-"))
    try:
        stats = None if args.no_ray else measure_utilization(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if stats is None:
        rows.append(("worker utilization", "not measured", f">= {UTIL_TARGET:.0%}",
                     "skipped (--no-ray)" if args.no_ray else "NO: Ray is not installed (pip install 'evosuite[ray]')"))
        results.append({"name": "p5_ray_worker_utilization", "value": None, "target": UTIL_TARGET, "met": False})
    else:
        util = stats["utilization"] or 0.0
        met = util >= UTIL_TARGET
        rows.append((f"worker utilization ({stats['workers']} workers, {stats['evaluations']} evals)",
                     f"{util:.1%}", f">= {UTIL_TARGET:.0%}",
                     "yes" if met else f"NO (short by {(UTIL_TARGET - util) * 100:.1f} points)"))
        rows.append(("  busy s per worker / span s", " / ".join(f"{b:.1f}" for b in stats["busy_seconds"]) +
                     f" / {stats['wall_seconds']:.1f}", "", ""))
        rows.append(("  whole run incl. Ray start, loading, table", f"{stats['total_seconds']:.1f} s", "", ""))
        results.append({"name": "p5_ray_worker_utilization", "value": round(util, 4), "target": UTIL_TARGET,
                        "met": met})
    if not args.no_memory:
        more_rows, more_results = memory_rows(args)
        rows += more_rows
        results += more_results
    print(f"P5 Ray and memory: {'quick (tiny models, toy task)' if args.quick else 'tiny zoo (test), zoo-ja-vqa'}; "
          f"memory of a PS run with M = {args.sources} sources")
    widths = [52, 16, 16, 28, 14, 12]
    head = ("figure", "value", "target", "met", "file pages", "merge/cand")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
