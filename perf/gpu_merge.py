"""A PS candidate loop on one device: merge time per candidate and peak device memory, ~1B synthetic family.

    python perf/gpu_merge.py [--device cuda] [--size 1b] [--methods dare_ties,ties,task_arithmetic]
                             [--candidates 5] [--sources 2] [--json FILE]

Builds the seeded synthetic family of ``perf/synthetic.py`` (base + M fine-tunes, bfloat16, in a temp dir,
removed afterwards), loads it on ``--device`` as a run does, builds the PS space per method and merges
``--candidates`` seeded genomes into the candidate, which stays on the device (the first merge is a
warm-up and not counted). Prints per method: the median merge seconds per candidate, and on cuda the
peak allocated GPU memory over one model's bytes; with the GPU's name. ``--device cpu`` gives the CPU
figure of the same loop (1 thread).
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
from synthetic import DTYPES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="1b")
    ap.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    ap.add_argument("--methods", default="dare_ties,ties,task_arithmetic")
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--sources", type=int, default=2, help="M")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch
    from synthetic import build_family, parameter_count

    from evosuite.models import load_model
    from evosuite.plugin_manager import get

    torch.set_num_threads(1)
    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(0) if cuda else "CPU, 1 thread"
    tmp = Path(tempfile.mkdtemp(prefix="evosuite-gpu-merge-"))
    results = []
    try:
        paths = build_family(tmp, args.size, count=args.sources + 1, dtype=args.dtype)
        base = load_model(str(paths[0]), dtype=args.dtype, device=args.device)
        sources = [load_model(str(p), dtype=args.dtype, device=args.device) for p in paths[1:]]
        model_bytes = sum(t.numel() * t.element_size() for t in base.mergeable_parameters().values())
        print(f"{args.size} family ({parameter_count(args.size) / 1e9:.2f}B parameters, {args.dtype}), "
              f"M = {args.sources} sources + base, on {args.device}: {name}")
        for method in args.methods.split(","):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            space = get("spaces", "ps")(sources, [f"s{k}" for k in range(len(sources))], base, sources[-1],
                                        seed=0, method=method, granularity="global")
            rng = torch.Generator().manual_seed(0)
            seconds = []
            for k in range(args.candidates + 1):
                genome = torch.rand(space.dimension, generator=rng).tolist()
                start = time.perf_counter()
                candidate = space.candidate(genome)
                if cuda:
                    torch.cuda.synchronize()
                if k:  # the first merge allocates the scratch buffers: a warm-up
                    seconds.append(time.perf_counter() - start)
            device = {t.device.type for t in candidate.mergeable_parameters().values()}
            peak = torch.cuda.max_memory_allocated() if cuda else None
            row = {"method": method, "merge_seconds": statistics.median(seconds), "device": name,
                   "candidate_on": sorted(device), "peak_gpu_bytes": peak,
                   "peak_gpu_models": peak / model_bytes if peak else None, "model_bytes": model_bytes,
                   "size": args.size, "dtype": args.dtype, "sources": args.sources}
            results.append(row)
            print(f"  {method:16s} {row['merge_seconds']:.3f} s per candidate" +
                  (f", peak GPU memory {peak / 2**30:.2f} GiB = {row['peak_gpu_models']:.2f} models" if peak else "")
                  + f", candidate on {row['candidate_on']}")
            del space, candidate
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
