"""P2: candidates evaluated per hour, evosuite's in-memory merging against a merge-to-disk-then-reload loop.

    python perf/evolution_speed.py [--quick] [--size tiny,134m] [--candidates N] [--zoo DIR]
                                   [--no-fitness-demo] [--no-keep-draws] [--json FILE]

The loops score the same seeded genomes of the same PS space (DARE-TIES, one density and weight per
source) on the same benchmark items, interleaved candidate by candidate:

* in-memory: ``space.candidate(genome)`` rewrites one resident model, then the benchmark runs on it; twice,
  side by side: with the ``ps`` defaults, and with ``keep_draws: true`` (DARE's random draws kept from the
  first candidate and replayed: the same masks, 4 bytes a parameter per source; a search keeps state from
  candidate to candidate, which a loop of merge programs cannot);
* disk: a merge program (a fresh Python process: evosuite loads the sources, merges the genome and writes
  safetensors, config and tokenizer, as ``mergekit-yaml`` would) then this process loads the result with
  ``load_model`` and scores it: the loop of tools that merge with one program and evaluate with another;
* in-process disk round trip (shown, not judged): the candidate written by this process and loaded back,
  without the merge program's start-up and loading.

Their predictions must be identical (checked). The target is judged on the kept-draws loop (a
memory-for-speed option whose cost the run's log states); the defaults' ratio is reported beside it.
``--no-keep-draws`` skips that loop (at 1b its draws take 8.8 GB). Sizes (``--size``, comma-separated):
``tiny`` is the tiny zoo (``--zoo DIR`` names a built one, else the test variant is built or reused) on
zoo-ja-vqa's 300 search items; ``134m`` and ``1b`` are the synthetic families of ``perf/synthetic.py``
(float32, 1b in bfloat16; built in a temp dir and removed) on a toy task of 24 prompts x 8 new tokens.
The target is judged at the largest size given; smaller ones are reported. ``--quick`` uses tiny random
models (seconds).

The cheaper-fitness demo (full mode only, needs the tiny zoo) runs the zoo's VLM experiment twice with one
seed, scoring every item vs ``fitness: {subset: 40, grow: 1.3, racing: true, chunk: 10}``, and reports the
share of items scored and whether the cheap run's held-out score lies in the full run's 95% bootstrap
interval; ``evosuite (cheap)`` candidates/hour is that run's search rate against the disk loop.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET = 5.0
SIZE_DTYPE = {"tiny": "float32", "134m": "float32", "1b": "bfloat16"}
FITNESS = {"subset": 40, "grow": 1.3, "racing": True, "chunk": 10}
#: The cheap run's held-out score "matches" when it lies inside the full run's 95% bootstrap interval of the
#: held-out metric (sampling noise of the test split), or within this of it when the metric has none.
MATCH_TOLERANCE = 0.01


def toy_benchmark():
    from evosuite.api import Benchmark, BenchmarkResult

    class Toy(Benchmark):
        name, metric, splits, search_split, test_split = "toy", "match", ("search",), "search", "search"

        def items(self, split, *, limit=None, seed=None):
            return [{"id": i, "prompt": f"q{i % 10} {chr(97 + i % 20)}:"} for i in range(limit or 24)]

        def predict(self, model, items, *, progress=None):
            return model.generate([i["prompt"] for i in items], max_new_tokens=8, batch_size=32)

        def score(self, items, predictions, *, split):
            s = sum(p.startswith("a") for p in predictions) / len(predictions)
            return BenchmarkResult(self.name, split, s, {"match": s})

    return Toy()


def quick_setup(root: Path):
    """Three tiny random Llamas and a toy char-matching task (no zoo needed)."""
    from tests.factories import write_llm

    paths = {name: write_llm(root / name, seed=seed) for name, seed in (("base", 0), ("a", 1), ("b", 2))}
    return paths, ["a", "b"], "base", toy_benchmark(), {"method": "dare_ties", "granularity": "global"}


def family_setup(root: Path, size: str):
    """The synthetic family of ``size`` (base and two fine-tunes) and the toy task."""
    from synthetic import build_family

    base, a, b = build_family(root, size, count=3, dtype=SIZE_DTYPE[size])
    return ({"base": base, "a": a, "b": b}, ["a", "b"], "base", toy_benchmark(),
            {"method": "dare_ties", "granularity": "global"})


def zoo_setup(zoo: str | None):
    from evosuite.plugins.zoo.benchmarks import ZooJapaneseVQA
    from evosuite.plugins.zoo.build import build_zoo
    from evosuite.plugins.zoo.experiments import SPACE_OPTIONS

    root = Path(zoo) if zoo else build_zoo("test", seed=0, progress=lambda m: print(m, file=sys.stderr))
    world = json.loads((root / "zoo.json").read_text())["worlds"]["zoo-ja-vqa"]
    paths = {"base": root / world["base"], "ja": root / world["ja"], "vlm": root / world["vlm"]}
    return paths, ["ja", "vlm"], "base", ZooJapaneseVQA(data_dir=str(root)), dict(SPACE_OPTIONS["ps"]), root


MERGE_PROGRAM = """
import json, sys, torch
torch.set_num_threads(1)
from evosuite.models import load_model
from evosuite.plugin_manager import get
job = json.loads(sys.argv[1])
models = [load_model(p, dtype=job["dtype"]) for p in job["sources"]]
base = load_model(job["base"], dtype=job["dtype"])
space = get("spaces", "ps")(models, job["names"], base, models[-1], seed=job["seed"], **job["options"])
space.export(job["genome"], job["out"])
"""


def merge_program(paths, names, base_name, options, genome, out: Path, dtype: str, seed: int) -> None:
    """The merge-to-disk step as a separate program would do it: its own process, loading the sources."""
    import subprocess

    job = {"sources": [str(paths[n]) for n in names], "base": str(paths[base_name]), "names": names,
           "options": options, "genome": genome, "out": str(out), "dtype": dtype, "seed": seed}
    proc = subprocess.run([sys.executable, "-c", MERGE_PROGRAM, json.dumps(job)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"merge program failed: {proc.stderr[-2000:]}")


def measure_loops(paths, names, base_name, benchmark, options, candidates: int, seed: int = 0,
                  dtype: str = "float32", keep_draws: bool = True) -> dict:
    """Median seconds per candidate of each loop (``memory``, ``kept`` (None without ``keep_draws``), ``disk``,
    ``round_trip``; ``merge`` and ``kept_merge``: the in-memory merges alone), ``same`` and ``items``."""
    import numpy as np

    from evosuite.models import load_model
    from evosuite.plugin_manager import get

    models = [load_model(str(paths[n]), dtype=dtype) for n in names]
    base = load_model(str(paths[base_name]), dtype=dtype)
    space = get("spaces", "ps")(models, names, base, models[-1], seed=seed, **options)
    # the same sources, a second resident candidate that keeps DARE's draws (the merge program merges once:
    # nothing to keep)
    kept_space = (get("spaces", "ps")(models, names, base, models[-1], seed=seed, **options, keep_draws=True)
                  if keep_draws else None)
    items = benchmark.items(benchmark.search_split)
    rng = np.random.RandomState(seed)
    genomes = [list(map(float, rng.rand(space.dimension))) for _ in range(candidates)]
    memory, merging, kept, kept_merging, disk, round_trip, same = [], [], [], [], [], [], True

    def in_memory(with_space, genome, total, merge_only):
        start = time.perf_counter()
        candidate = with_space.candidate(genome)
        merge_only.append(time.perf_counter() - start)
        predictions = benchmark.predict(candidate, items)
        score = benchmark.score(items, predictions, split=benchmark.search_split).score
        total.append(time.perf_counter() - start)
        return predictions, score
    tmp = Path(tempfile.mkdtemp(prefix="evosuite-p2-"))

    def reload_and_score(out):
        reloaded = load_model(str(out), dtype=dtype)
        predictions = benchmark.predict(reloaded, items)
        score = benchmark.score(items, predictions, split=benchmark.search_split).score
        del reloaded
        shutil.rmtree(out, ignore_errors=True)
        return predictions, score

    try:
        for k, genome in enumerate(genomes):
            a, score_a = in_memory(space, genome, memory, merging)
            if kept_space is not None:
                d, score_d = in_memory(kept_space, genome, kept, kept_merging)
                same = same and d == a and score_d == score_a

            start = time.perf_counter()
            merge_program(paths, names, base_name, options, genome, tmp / f"program-{k}", dtype, seed)
            b, score_b = reload_and_score(tmp / f"program-{k}")
            disk.append(time.perf_counter() - start)

            start = time.perf_counter()
            space.export(genome, tmp / f"export-{k}")
            c, score_c = reload_and_score(tmp / f"export-{k}")
            round_trip.append(time.perf_counter() - start)
            same = same and a == b == c and score_a == score_b == score_c
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    median = statistics.median
    return {"memory": median(memory), "merge": median(merging), "kept": median(kept) if kept else None,
            "kept_merge": median(kept_merging) if kept else None, "disk": median(disk),
            "round_trip": median(round_trip), "same": same, "items": len(items)}


def fitness_demo(root: Path, budget: int):
    """Two runs of the zoo's VLM experiment: full evaluation vs cheaper fitness. Returns both summaries."""
    from evosuite.config import parse_config
    from evosuite.plugins.zoo.experiments import ZooVLMExperiment
    from evosuite.runner import run_experiment
    from evosuite.tui import make_reporter

    os.environ["EVOSUITE_ZOO_VARIANT"] = "test"
    base = ZooVLMExperiment().config()
    world = json.loads((root / "zoo.json").read_text())["worlds"]["zoo-ja-vqa"]  # the given zoo, not the cache's
    base["sources"] = [{"name": "ja-lm", "model": str(root / world["ja"])},
                       {"name": "en-vlm", "model": str(root / world["vlm"])}]
    base["base_model"] = str(root / world["base"])
    base["benchmark"] = {"name": "zoo-ja-vqa", "options": {"data_dir": str(root)}}
    base["budget"] = budget
    out = {}
    tmp = Path(tempfile.mkdtemp(prefix="evosuite-p2-runs-"))
    try:
        for label, extra in (("full", {}), ("cheap", {"fitness": FITNESS})):
            start = time.perf_counter()
            summary = run_experiment(parse_config({**base, **extra}), tmp / label, make_reporter(quiet=True),
                                     save_model=False)
            summary["_seconds"] = time.perf_counter() - start
            search = sum(r["seconds"] for r in map(json.loads, (tmp / label / "evaluations.jsonl").open()))
            summary["_search_seconds"] = search
            out[label] = summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny random models and a toy task (seconds)")
    ap.add_argument("--size", default="tiny", help="comma-separated: tiny (the zoo), 134m, 1b; the target is "
                                                   "judged at the largest")
    ap.add_argument("--candidates", type=int, default=None, help="genomes per loop (default 12 at tiny, 6 "
                                                                 "above, quick 3)")
    ap.add_argument("--zoo", default=None, help="a built zoo directory (default: build or reuse the test zoo)")
    ap.add_argument("--budget", type=int, default=48, help="evaluations of each cheaper-fitness demo run")
    ap.add_argument("--no-fitness-demo", action="store_true", help="skip the cheaper-fitness runs")
    ap.add_argument("--no-keep-draws", action="store_true", help="skip the in-memory loop that keeps DARE's "
                                                                 "random draws (ps option keep_draws: 4 bytes a "
                                                                 "parameter per source)")
    ap.add_argument("--json", default=None, help="write [{name, value, target, met}] here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    order = ["tiny", "134m", "1b"]
    sizes = ["quick"] if args.quick else sorted({x.strip() for x in args.size.split(",") if x.strip()},
                                                key=order.index)
    rows, results, root, same_all, labels = [], [], None, True, []
    disk_tiny = None
    for size in sizes:
        n = args.candidates or {"quick": 3, "tiny": 12}.get(size, 6)
        tmp = Path(tempfile.mkdtemp(prefix="evosuite-p2-models-"))
        try:
            if size == "quick":
                paths, names, base, bench, options = quick_setup(tmp)
                label = "tiny random Llamas, toy task"
            elif size == "tiny":
                paths, names, base, bench, options, root = zoo_setup(args.zoo)
                label = "tiny zoo (test), zoo-ja-vqa search split"
            else:
                from synthetic import parameter_count

                paths, names, base, bench, options = family_setup(tmp, size)
                label = f"{size} synthetic family ({parameter_count(size) / 1e6:.0f}M parameters, " \
                        f"{SIZE_DTYPE[size]}), toy task"
            loops = measure_loops(paths, names, base, bench, options, n, dtype=SIZE_DTYPE.get(size, "float32"),
                                  keep_draws=not args.no_keep_draws)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        mem, kept, disk, trip = loops["memory"], loops["kept"], loops["disk"], loops["round_trip"]
        labels.append(f"{label}: {loops['items']} items, {n} candidates")
        if size == "tiny":
            disk_tiny = disk
        same_all = same_all and loops["same"]
        judged = size == sizes[-1]
        # the target is judged on the kept-draws loop when it ran; the defaults' ratio is shown beside it
        judged_loop, judged_name = (kept, "keep_draws") if kept is not None else (mem, "defaults")
        ratio = disk / judged_loop
        verdict = ("yes" if ratio >= TARGET else f"NO (short by {TARGET / ratio:.1f}x)") if judged else "reported"
        rows += [(f"[{size}] in-memory merge + eval (defaults)", f"{mem:.3f} s", f"{3600 / mem:,.0f}/h",
                  f"{disk / mem:.2f}x", "", ""),
                 (f"[{size}]   of which the merge", f"{loops['merge']:.3f} s", "", "", "", "")]
        if kept is not None:
            rows += [(f"[{size}] in-memory, keep_draws", f"{kept:.3f} s", f"{3600 / kept:,.0f}/h",
                      f"{disk / kept:.2f}x", "", ""),
                     (f"[{size}]   of which the merge", f"{loops['kept_merge']:.3f} s", "", "", "", "")]
        rows += [(f"[{size}] merge program, reload, eval", f"{disk:.3f} s", f"{3600 / disk:,.0f}/h", "", "", ""),
                 (f"[{size}] in-process write, reload, eval", f"{trip:.3f} s", f"{3600 / trip:,.0f}/h",
                  f"{disk / trip:.2f}x", "", ""),
                 (f"[{size}] judged: {judged_name} vs merge program", "", "", f"{ratio:.2f}x",
                  f">= {TARGET}x" if judged else "", verdict)]
        results.append({"name": f"p2_candidates_per_hour_ratio_in_memory_vs_disk_{size}", "value": round(ratio, 3),
                        "target": TARGET if judged else None, "met": ratio >= TARGET if judged else True})
        results.append({"name": f"p2_ratio_in_memory_defaults_vs_disk_{size}", "value": round(disk / mem, 3),
                        "target": None, "met": True})
        results.append({"name": f"p2_ratio_in_memory_vs_in_process_round_trip_{size}",
                        "value": round(trip / judged_loop, 3), "target": None, "met": True})
    results.append({"name": "p2_same_predictions", "value": bool(same_all), "target": True, "met": bool(same_all)})
    same = same_all
    label = "; ".join(labels)
    demo = None
    if root is not None and not args.no_fitness_demo:
        demo = fitness_demo(root, args.budget)
        full, cheap = demo["full"], demo["cheap"]
        fraction = cheap["evaluation"]["ps"]["fraction"]
        diff = cheap["test_scores"]["merged"] - full["test_scores"]["merged"]
        metric, detail = full["metric"], full["test_metrics"]["merged"]
        low = detail.get(f"{metric}_low", full["test_scores"]["merged"] - MATCH_TOLERANCE)
        high = detail.get(f"{metric}_high", full["test_scores"]["merged"] + MATCH_TOLERANCE)
        matches = low <= cheap["test_scores"]["merged"] <= high
        cheap_rate = cheap["evaluations"] / cheap["_search_seconds"]
        full_rate = full["evaluations"] / full["_search_seconds"]
        cheap_ratio = cheap_rate * disk_tiny  # the demo runs on the tiny zoo
        rows += [("cheap fitness: items scored / full", "", "", f"{fraction:.3f}", "<= 0.333",
                  "yes" if fraction <= 1 / 3 else "NO"),
                 ("cheap fitness: held-out merged vs full's", "", "",
                  f"{cheap['test_scores']['merged']:.4f} vs {full['test_scores']['merged']:.4f} ({diff:+.4f})",
                  f"in [{low:.3f}, {high:.3f}]", "yes" if matches else "NO"),
                 ("full-evaluation run (search, per candidate)", f"{1 / full_rate:.3f} s", f"{3600 * full_rate:,.0f}/h",
                  "", "", ""),
                 ("[tiny] evosuite (cheap) / merge program loop", f"{1 / cheap_rate:.3f} s",
                  f"{3600 * cheap_rate:,.0f}/h", f"{cheap_ratio:.2f}x", f">= {TARGET}x",
                  "yes" if cheap_ratio >= TARGET else "NO")]
        results += [{"name": "p2_cheap_fitness_item_fraction", "value": round(fraction, 4), "target": 1 / 3,
                     "met": fraction <= 1 / 3},
                    {"name": "p2_cheap_fitness_heldout_minus_full", "value": round(diff, 4),
                     "target": f"within the full run's 95% interval [{low:.4f}, {high:.4f}]", "met": bool(matches)},
                    {"name": "p2_candidates_per_hour_ratio_cheap_vs_disk", "value": round(cheap_ratio, 3),
                     "target": TARGET, "met": cheap_ratio >= TARGET}]
    print(f"P2 evolution speed: {label} (median s per candidate), {torch.get_num_threads()} thread")
    widths = [46, 10, 12, 28, 10, 22]
    head = ("loop", "s/cand", "cand/hour", "x merge program", "target", "met")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print(f"same predictions in both loops: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
