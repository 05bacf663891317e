"""Forward time of a DFS candidate against a plain model executing the same layers, side by side.

    python perf/dfs_forward.py [--quick] [--repeats N] [--device cpu|cuda] [--json FILE]

Builds two seeded Llama-shaped sources with transformers (no downloads; default hidden 512, 8 layers
each; ``--quick`` a tiny pair), makes a DFS candidate whose path alternates between them (path length 8,
a scale != 1 at every hop between sources: the most wrapper work a path can ask for), exports it and
loads the export's layers as a plain ``LlamaForCausalLM`` with the same number of layers (the scales left
out, so it is exactly "a plain model executing the same layers"). Both run the same inputs, interleaved,
``--repeats`` times; the table shows the median wall time of

* prefill: one forward pass over a batch of prompts (the fitness evaluation's heavy part), and
* decode: one new token with a filled KV cache (generation's inner step, where per-layer overhead shows),

and the ratio DFS / plain against the 1.1x target. Runs on one CPU thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {  # name -> (hidden, intermediate, layers, heads, batch, prompt tokens)
    "default": (512, 1376, 8, 8, 4, 128),
    "tiny": (64, 128, 4, 4, 2, 16),
}
TARGET = 1.1


def build_sources(root: Path, size: str) -> tuple[Path, Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.factories import char_tokenizer

    hidden, inter, layers, heads, _, _ = SIZES[size]
    paths = []
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(char_tokenizer().get_vocab()), hidden_size=hidden,
                             intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                             num_key_value_heads=heads, max_position_embeddings=1024, tie_word_embeddings=False,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0)
        path = root / name
        LlamaForCausalLM(config).save_pretrained(path)
        char_tokenizer().save_pretrained(path)
        paths.append(path)
    return paths[0], paths[1]


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models, few repeats (seconds)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 30, quick 25)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write [{name, value, target, met}] here")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoModelForCausalLM

    from evosuite.models import load_model
    from evosuite.plugin_manager import get_host

    torch.set_num_threads(args.threads)
    size = "tiny" if args.quick else "default"
    repeats = args.repeats or (25 if args.quick else 30)
    hidden, _, layers, _, batch, tokens = SIZES[size]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path_a, path_b = build_sources(root, size)
        a = load_model(str(path_a), device=args.device)
        b = load_model(str(path_b), device=args.device)
        # Alternate sources (A0 B1 A2 B3 ...: one A and one B layer per repetition), so every position after
        # the first is entered from the other source and scaled: the most wrapper work a path can ask for.
        space = get_host().registry("spaces").get("dfs")([a, b], ["a", "b"], None, a, scales="hop",
                                                          repeats=layers // 2)
        steps = []
        for rep in range(layers // 2):
            steps.append((0, 2 * rep, 1.0 if rep == 0 else 0.8))
            steps.append((1, 2 * rep + 1, 1.25))
        genome = space.encode(steps)
        candidate = space.candidate(genome)
        recipe = space.recipe(genome)
        export = space.export(genome, root / "export")
        plain = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).to(args.device).eval()
        assert plain.config.num_hidden_layers == len(recipe["path"]) == layers

        gen = torch.Generator().manual_seed(0)
        vocab = plain.config.vocab_size
        ids = torch.randint(5, vocab, (batch, tokens), generator=gen).to(args.device)
        mask = torch.ones_like(ids)
        step_ids = torch.randint(5, vocab, (batch, 1), generator=gen).to(args.device)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

        def prefill(module):
            return lambda: module(input_ids=ids, attention_mask=mask, use_cache=False)

        def decode_setup(module):
            out = module(input_ids=ids, attention_mask=mask, use_cache=True)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            full_mask = torch.ones(batch, tokens + 1, dtype=mask.dtype, device=mask.device)

            def step():
                module(input_ids=step_ids, attention_mask=full_mask, cache=cache, use_cache=True)
                cache.crop(-1)  # back to the prompt: every step decodes the same position

            return step

        cases = {
            "prefill": {"dfs": prefill(candidate.module), "plain": prefill(plain)},
        }
        with torch.inference_mode():
            cases["decode"] = {"dfs": decode_setup(candidate.module), "plain": decode_setup(plain)}
            # Same numbers: the plain model is the path without its scales, so compare with scales 1 too.
            unscaled = space.candidate(space.encode([(src, layer) for src, layer, _ in steps]))
            same = torch.equal(unscaled.module(input_ids=ids, attention_mask=mask).logits,
                               plain(input_ids=ids, attention_mask=mask).logits)
            candidate = space.candidate(genome)
            times: dict[str, dict[str, list[float]]] = {c: {"dfs": [], "plain": []} for c in cases}
            for case in cases.values():  # warm-up
                for fn in case.values():
                    for _ in range(2):
                        fn()
            for r in range(repeats):
                for name, case in cases.items():
                    order = ("dfs", "plain") if r % 2 == 0 else ("plain", "dfs")
                    for which in order:
                        times[name][which].append(timed(case[which], sync))

    results, rows = [], []
    for name in cases:
        dfs_t = statistics.median(times[name]["dfs"])
        plain_t = statistics.median(times[name]["plain"])
        ratio = dfs_t / plain_t
        rows.append((name, plain_t, dfs_t, ratio))
        results.append({"name": f"dfs_{name}_ratio", "value": round(ratio, 4), "target": TARGET,
                        "met": ratio <= TARGET})
    results.append({"name": "dfs_unscaled_equals_plain", "value": bool(same), "target": True, "met": bool(same)})

    table = Table(title=f"DFS candidate vs plain model, {layers} executed layers (hidden {hidden}, batch {batch} x "
                        f"{tokens} tokens, {args.device}, {args.threads} thread(s), median of {repeats})")
    table.add_column("pass")
    table.add_column("plain (ms)", justify="right")
    table.add_column("DFS (ms)", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column(f"target <= {TARGET}x", justify="center")
    for name, plain_t, dfs_t, ratio in rows:
        table.add_row(name, f"{plain_t * 1e3:.2f}", f"{dfs_t * 1e3:.2f}", f"{ratio:.3f}",
                      "[green]met[/]" if ratio <= TARGET else "[red]missed[/]")
    Console().print(table)
    path = " ".join(f"{p['source']}{p['layer']}x{p['scale']:g}" for p in recipe["path"])
    Console().print(f"path: {path}; the same path with scales 1 equals the plain export exactly: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
