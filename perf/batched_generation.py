"""P3: batched generation against one item at a time, same outputs, side by side.

    python perf/batched_generation.py [--quick] [--items N] [--batch-size B] [--zoo DIR] [--json FILE]

Generates greedy completions for the same prompts with ``LoadedModel.generate`` twice, interleaved
(``--repeats`` rounds, median): once with ``batch_size=B`` (left-padded batches, what a benchmark's
``predict`` does) and once item by item (``batch_size=1``, one call per prompt). The outputs must be
identical. Default: the tiny zoo's (test variant) Japanese LM on zoo-ja-math prompts; ``--quick``: a
tiny random Llama on toy prompts.
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

TARGET = 3.0


def setup(args, tmp: Path):
    from evosuite.models import load_model

    if args.quick:
        from tests.factories import write_llm

        model = load_model(str(write_llm(tmp / "m", seed=1)))
        prompts = [f"q{i % 10} {chr(97 + i % 20)}:" for i in range(args.items or 16)]
        return model, prompts, {"max_new_tokens": 8}, "tiny random Llama, toy prompts"
    from evosuite.plugins.zoo.benchmarks import ZooJapaneseMath
    from evosuite.plugins.zoo.build import build_zoo
    from evosuite.plugins.zoo.prompts import math_prompt

    root = Path(args.zoo) if args.zoo else build_zoo("test", seed=0, progress=lambda m: print(m, file=sys.stderr))
    world = json.loads((root / "zoo.json").read_text())["worlds"]["zoo-ja-math"]
    model = load_model(str(root / world["ja"]))
    bench = ZooJapaneseMath(data_dir=str(root))
    items = bench.items(bench.search_split, limit=args.items or 64, seed=0)
    options = {"max_new_tokens": bench.settings["max_new_tokens"], "stop": ["\n"]}
    return model, [math_prompt(i["question"]) for i in items], options, "tiny zoo (test) ja LM, zoo-ja-math prompts"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny random model (seconds)")
    ap.add_argument("--items", type=int, default=None, help="prompts (default 64, quick 16)")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (default 64, quick 16)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    ap.add_argument("--zoo", default=None, help="a built zoo directory (default: build or reuse the test zoo)")
    ap.add_argument("--json", default=None, help="write [{name, value, target, met}] here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="evosuite-p3-"))
    try:
        model, prompts, options, label = setup(args, tmp)
        batch = args.batch_size or (16 if args.quick else 64)
        repeats = args.repeats or (1 if args.quick else 3)
        model.generate(prompts[:2], batch_size=2, **options)  # warm-up
        batched_t, single_t, same = [], [], True
        for _ in range(repeats):
            start = time.perf_counter()
            batched = model.generate(prompts, batch_size=batch, **options)
            batched_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            single = [model.generate([p], batch_size=1, **options)[0] for p in prompts]
            single_t.append(time.perf_counter() - start)
            same = same and batched == single
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    b, s = statistics.median(batched_t), statistics.median(single_t)
    ratio = s / b
    print(f"P3 batched generation: {label}, {len(prompts)} prompts, {options['max_new_tokens']} new tokens max, "
          f"median of {repeats}, 1 thread")
    widths = [28, 12, 14, 10, 10, 20]
    print("  ".join(h.ljust(w) for h, w in zip(("mode", "seconds", "items/s", "ratio", "target", "met"), widths)))
    print("  ".join(str(c).ljust(w) for c, w in zip((f"batched (batch {batch})", f"{b:.3f}",
                                                         f"{len(prompts) / b:.1f}", "", "", ""), widths)))
    print("  ".join(str(c).ljust(w) for c, w in zip(("one item at a time", f"{s:.3f}", f"{len(prompts) / s:.1f}",
                                                         "", "", ""), widths)))
    met = ratio >= TARGET
    print("  ".join(str(c).ljust(w) for c, w in zip(("speed-up (single / batched)", "", "", f"{ratio:.2f}x",
                                                         f">= {TARGET}x", "yes" if met else
                                                         f"NO (short by {TARGET / ratio:.1f}x)"), widths)))
    print(f"identical outputs: {same}")
    results = [{"name": "p3_batched_vs_single_speedup", "value": round(ratio, 3), "target": TARGET, "met": met},
               {"name": "p3_identical_outputs", "value": bool(same), "target": True, "met": bool(same)}]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
