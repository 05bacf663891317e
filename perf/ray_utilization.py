"""P5: Ray worker utilization over an evolution with 2 workers, and peak memory of a PS run.

    python perf/ray_utilization.py [--quick] [--workers 2] [--budget N] [--zoo DIR] [--json FILE]

Utilization: a whole run through ``evosuite.runner.run_experiment`` with ``workers: 2`` (a local Ray
started here): the zoo's VLM experiment (test zoo; ``--quick``: tiny random models and the toy test
benchmark). Utilization is the workers' busy time (evaluating) over workers x the span from the stage's
first dispatch to its last result: the gaps between generations (the driver telling the optimizer and
asking the next generation) and each generation's tail (the last candidates finishing while the other
worker has nothing left) count as idle. Worker start-up (Ray, loading the sources) is reported apart.
Skipped, and said so, when Ray is not installed.

Peak memory: a fresh process loads M sources (and the base model a task-vector merge needs), builds the
PS space (DARE-TIES, then linear without a base) and scores a few candidates; its peak resident memory
above the same process's after imports, divided by one model's weight bytes (Llama-shaped random models,
hidden 512, 8 layers; ``--quick`` smaller). The issue's target is (M + 1) x one model; the table also
shows what the space holds by design (for TIES/DARE, the merger's float32 task vectors too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

UTIL_TARGET = 0.90


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory_child(m: int, hidden: int, layers: int, out: str, method: str = "dare_ties") -> None:
    """Runs in a fresh process: load M sources + base, build the PS space, score candidates; print figures."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from evosuite.models import load_model
    from evosuite.plugin_manager import get
    from tests.factories import char_tokenizer

    torch.set_num_threads(1)
    root = Path(out)
    for seed in range(m + 1):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(char_tokenizer().get_vocab()), hidden_size=hidden,
                             intermediate_size=int(hidden * 2.6875), num_hidden_layers=layers,
                             num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
                             tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = LlamaForCausalLM(config)
        model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        model.save_pretrained(root / f"m{seed}")
        char_tokenizer().save_pretrained(root / f"m{seed}")
        del model
    import gc

    # Warm-up: the first load imports the adapters and plugins; that memory is not the run's.
    warm = load_model(str(root / "m0"))
    get("spaces", "ps")
    del warm
    gc.collect()
    # Reset the high-water mark where the kernel allows it, else measure from the current peak.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    baseline = max(_vm_kib("VmRSS"), 0)
    hwm_before = _vm_kib("VmHWM")
    base = load_model(str(root / "m0")) if method != "linear" else None  # linear merges need no base
    sources = [load_model(str(root / f"m{k}")) for k in range(1, m + 1)]
    space = get("spaces", "ps")(sources, [f"s{k}" for k in range(m)], base, sources[-1], seed=0,
                                method=method, granularity="global")
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):
        genome = torch.rand(space.dimension, generator=rng).tolist()
        space.candidate(genome).generate(["ab:", "cd:"], max_new_tokens=4, batch_size=2)
    peak = _vm_kib("VmHWM")
    used = (peak - (baseline if peak > hwm_before or hwm_before <= baseline else hwm_before)) * 1024
    print(json.dumps({"peak_bytes": used, "model_bytes": model_bytes, "baseline_kib": baseline,
                      "peak_kib": peak, "hwm_before_kib": hwm_before}))


def measure_memory(m: int, quick: bool, method: str = "dare_ties") -> dict:
    hidden, layers = (128, 4) if quick else (512, 8)
    tmp = tempfile.mkdtemp(prefix="evosuite-p5-mem-")
    try:
        proc = subprocess.run([sys.executable, __file__, "--_memory-child", str(m), str(hidden), str(layers), tmp,
                               method],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_memory-child":
        memory_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models (about a minute: Ray's start-up dominates)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=int, default=None, help="evaluations of the run (default 32, quick 8)")
    ap.add_argument("--sources", type=int, default=2, help="M, the sources of the memory measurement")
    ap.add_argument("--zoo", default=None, help="a built zoo directory (default: build or reuse the test zoo)")
    ap.add_argument("--no-ray", action="store_true", help="skip the utilization run")
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
    m = args.sources
    target = m + 1
    # TIES/DARE also hold the base; the merger forms task vectors per tensor (no model-sized copies).
    for method, held, note in (("dare_ties", m + 2, "M sources + base + candidate"),
                               ("linear", m + 1, "M sources + candidate")):
        mem = measure_memory(m, args.quick, method)
        ratio = mem["peak_bytes"] / mem["model_bytes"]
        met = ratio <= target
        rows.append((f"PS {method} peak memory / one model (M={m})", f"{ratio:.2f}x", f"<= {target}x (M + 1)",
                     "yes" if met else f"NO (over by {ratio - target:.2f} models)"))
        rows.append((f"  models held by design: {note}", f"{held}x", "", ""))
        results.append({"name": f"p5_ps_{method}_peak_memory_models", "value": round(ratio, 3), "target": target,
                        "met": met})
    rows.append(("  one model (float32)", f"{mem['model_bytes'] / 2**20:.1f} MiB", "", ""))
    print(f"P5 Ray and memory: {'quick (tiny models, toy task)' if args.quick else 'tiny zoo (test), zoo-ja-vqa'}")
    widths = [48, 24, 22, 34]
    print("  ".join(h.ljust(w) for h, w in zip(("figure", "value", "target", "met"), widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
