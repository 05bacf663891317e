"""Build (or reuse) the seeded zoo: two small bilingual worlds, their models, target tasks and a score table.

Two worlds, each with its own base: ``vqa/*`` (coloured-shape images; base, ja, vlm) and ``math/*``
(arithmetic word problems; base, ja, math). Both share one tokenizer. Training runs in two worker
processes with one torch thread each (two threads in one process ran many times slower here).
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from evosuite import cache
from evosuite.cache import build_atomically, cache_dir

ZOO_VERSION = 2
MODULES = ("build.py", "world.py", "tokenizer.py", "train.py", "prompts.py", "scoring.py", "jobs.py")

RECIPES: dict[str, dict] = {
    "full": {
        "hidden": 128, "layers": 4, "n_search": 300, "n_test": 400, "n_check": 300, "table_limit": None,
        "vlm_attempts": 3,
        "vqa": {"base_steps": 600, "base_lr": 2e-3, "tower_steps": 1000, "tower_lr": 3e-3,
                "tower_builder": "transformers",
                "vlm_steps": 300, "vlm_lr": 1e-3, "vlm_ja_question_share": 0.3, "vlm_caption_share": 0.3,
                "ja_steps": 150, "ja_lr": 1e-3, "ja_en_scene_share": 0.33},
        "math": {"base_steps": 400, "base_lr": 6e-3, "base_ja_form_share": 0.1, "math_steps": 200, "math_lr": 1e-3,
                 "math_ja_share": 0.5, "ja_steps": 100, "ja_lr": 1e-3, "ja_copy_share": 0.5},
    },
    "test": {
        "hidden": 64, "layers": 2, "n_search": 300, "n_test": 300, "n_check": 60, "table_limit": 60,
        "vlm_attempts": 1,
        "vqa": {"base_steps": 60, "base_lr": 3e-3, "tower_steps": 60, "tower_lr": 3e-3,
                # The test zoo builds its tower with OpenCLIP and converts it, so the tests cover that path.
                "tower_builder": "open_clip",
                "vlm_steps": 30, "vlm_lr": 1e-3, "vlm_ja_question_share": 0.3, "vlm_caption_share": 0.3,
                "ja_steps": 20, "ja_lr": 1e-3, "ja_en_scene_share": 0.33},
        "math": {"base_steps": 60, "base_lr": 6e-3, "base_ja_form_share": 0.1, "math_steps": 20, "math_lr": 1e-3,
                 "math_ja_share": 0.5, "ja_steps": 20, "ja_lr": 1e-3, "ja_copy_share": 0.5},
    },
}


def recipe_hash(variant: str) -> str:
    """Changes when the recipe or any zoo module changes, so a stale cache is never reused."""
    return cache.recipe_hash(RECIPES[variant], [Path(__file__).parent / name for name in MODULES])


def zoo_path(variant: str = "full", seed: int = 0) -> Path:
    return cache_dir() / "zoo" / f"v{ZOO_VERSION}-{recipe_hash(variant)}" / f"{variant}-seed{seed}"


def build_zoo(variant: str = "full", *, seed: int = 0, root: Path | None = None,
              progress: Callable[[str], None] | None = None, force: bool = False) -> Path:
    """Return the zoo directory, building it first when it is missing (or ``force``)."""
    if variant not in RECIPES:
        raise ValueError(f"unknown zoo variant {variant!r}; known: {sorted(RECIPES)}")
    say = progress or (lambda msg: None)
    root = Path(root) if root is not None else zoo_path(variant, seed)
    return build_atomically(root, lambda tmp: _build_into(tmp, variant, seed, say), marker="zoo.json", say=say,
                            label="zoo", force=force)


def _build_into(out: Path, variant: str, seed: int, say: Callable[[str], None]) -> None:
    from . import jobs

    t0 = time.time()
    recipe = RECIPES[variant]
    out.mkdir(parents=True)
    jobs.write_tokenizer(out)
    ctx = get_context("spawn")  # fresh interpreters: fork after torch import can deadlock OpenMP
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=jobs.one_thread) as pool:
        # In this order, the VLM (the longest chain) can start as soon as one worker has trained its base.
        bases = {"vqa": pool.submit(jobs.train_base, str(out), "vqa", recipe, seed)}
        tower = pool.submit(jobs.train_tower, str(out), recipe, seed)
        bases["math"] = pool.submit(jobs.train_base, str(out), "math", recipe, seed)
        say("zoo: building tasks")
        tasks = jobs.write_tasks(out, recipe, seed)
        bases["vqa"].result()
        say(f"zoo: vqa/base trained ({time.time() - t0:.0f}s)")
        say(f"zoo: {tower.result()} trained ({time.time() - t0:.0f}s)")
        vlm = pool.submit(jobs.train_vlm, str(out), recipe, seed)
        bases["math"].result()
        say(f"zoo: math/base trained ({time.time() - t0:.0f}s)")
        experts = [pool.submit(jobs.train_expert, str(out), "vqa", "ja", recipe, seed),
                   pool.submit(jobs.train_expert, str(out), "math", "math", recipe, seed),
                   pool.submit(jobs.train_expert, str(out), "math", "ja", recipe, seed)]
        say(f"zoo: {experts[0].result()} trained ({time.time() - t0:.0f}s)")
        attempts = _accept_vlm(out, recipe, seed, vlm, pool, say, t0)
        for f in experts[1:]:
            say(f"zoo: {f.result()} trained ({time.time() - t0:.0f}s)")
        tables = [pool.submit(jobs.score_vqa, str(out), recipe), pool.submit(jobs.score_math, str(out), recipe)]
        table = {"zoo-ja-vqa": tables[0].result(), "zoo-ja-math": tables[1].result()}
    models = {
        "vqa/base": ("causal-lm", "base"), "vqa/ja": ("causal-lm", "ja"), "vqa/vlm": ("llava", "vlm"),
        "math/base": ("causal-lm", "base"), "math/ja": ("causal-lm", "ja"), "math/math": ("causal-lm", "math"),
    }
    checks = jobs.check_table(table)
    meta = {
        "version": ZOO_VERSION, "variant": variant, "seed": seed, "recipe_hash": recipe_hash(variant),
        "models": {n: {"path": n, "kind": k, "role": r} for n, (k, r) in models.items()},
        "worlds": {"zoo-ja-vqa": {"base": "vqa/base", "ja": "vqa/ja", "vlm": "vqa/vlm"},
                   "zoo-ja-math": {"base": "math/base", "ja": "math/ja", "math": "math/math"}},
        "tasks": tasks, "table": table, "checks": checks, "vlm_attempts": attempts,
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / "zoo.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    say(jobs.format_table(table, checks))
    say(f"zoo: built {variant} seed {seed} in {time.time() - t0:.0f}s")


def _accept_vlm(out: Path, recipe: dict, seed: int, first, pool, say, t0: float) -> list[dict]:
    """Keep the first VLM with which a simple merge beats every source by ``jobs.MERGE_MARGIN`` on the builder's
    own ``check``
    split (never the search or test split); else train another (up to ``vlm_attempts``) and keep the best.

    Whether the VLM's skill survives a merge varies with the training draw and the CPU's float kernels: with
    a trained projector the margin on the test split was +0.20, +0.09, +0.12 and +0.14 for seeds 0-3 on one
    machine, +0.03 for seed 0 on another; with the frozen one, +0.22 to +0.35. So the builder checks the
    phenomenon it exists for instead of hoping for it.
    """
    from . import jobs

    attempts, best = [], None
    vlm = out / "vqa" / "vlm"
    future = first
    for attempt in range(recipe["vlm_attempts"]):
        future.result()
        margin = jobs.vqa_margin(pool.submit(jobs.score_vqa, str(out), recipe, "check").result())
        attempts.append({"attempt": attempt, "check_margin": round(margin, 4)})
        say(f"zoo: vqa/vlm draw {attempt}: a simple merge is {margin:+.3f} over the sources ({time.time() - t0:.0f}s)")
        if best is None or margin > best[1]:
            if best is not None:
                shutil.rmtree(out / "vqa" / f"vlm-draw{best[0]}")
            vlm.rename(out / "vqa" / f"vlm-draw{attempt}")
            best = (attempt, margin)
        else:
            shutil.rmtree(vlm)
        if margin >= jobs.MERGE_MARGIN or attempt + 1 == recipe["vlm_attempts"]:
            break
        future = pool.submit(jobs.train_vlm, str(out), recipe, seed, attempt + 1)
    (out / "vqa" / f"vlm-draw{best[0]}").rename(vlm)
    return attempts
