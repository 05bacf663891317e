"""The builder's units of work; each runs in a worker process and talks to the others only via disk."""

from __future__ import annotations

import os
import random
from pathlib import Path

TASK_SEED = 20240321  # the task splits are the same for every zoo seed, so tables compare across seeds
#: How far a simple merge must be above every source (and, for math, the constant answer) for the zoo to show
#: what it exists for; the builder's VLM check uses the same bar.
MERGE_MARGIN = 0.10
SIMPLE_MERGES = {  # name -> (method, weights (ja, other), density); shown in every table
    "linear (0.5, 0.5)": ("ta", (0.5, 0.5), 1.0),
    "task arithmetic (1, 1)": ("ta", (1.0, 1.0), 1.0),
    "ties (1, 1) d=0.5": ("ties", (1.0, 1.0), 0.5),
    "task arithmetic (1, 0.5)": ("ta", (1.0, 0.5), 1.0),
}


def one_thread() -> None:
    """Worker set-up: one torch thread, and no library progress bars (they would break the live dashboard)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from evosuite.runtime import quiet_library_progress

    torch.set_num_threads(1)
    quiet_library_progress()


def write_tokenizer(out: Path) -> None:
    from . import world

    world.make_tokenizer().save_pretrained(out / "tokenizer")


def _tok(out):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(out) / "tokenizer")


def _save_lm(model, tok, path: Path) -> None:
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)


def _load_lm(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def train_base(out: str, w: str, recipe: dict, seed: int) -> str:
    from . import train, world

    tok, r = _tok(out), recipe[w]
    rng = random.Random(f"{w}-base-{seed}")
    texts = (world.vqa_base_texts(rng, 20000) if w == "vqa"
             else world.math_base_texts(rng, 20000, r["base_ja_form_share"]))
    model = train.new_llama(tok, recipe["hidden"], recipe["layers"], seed)
    # Prompt tokens get weight 0.3: the base must model both languages' text, not only the answers.
    train.train(model, tok, train.encode(tok, texts, 0.3), steps=r["base_steps"], lr=r["base_lr"], seed=seed)
    _save_lm(model, tok, Path(out) / w / "base")
    return f"{w}/base"


def train_expert(out: str, w: str, role: str, recipe: dict, seed: int) -> str:
    from . import train, world

    tok, r = _tok(out), recipe[w]
    rng = random.Random(f"{w}-{role}-{seed}")
    if (w, role) == ("vqa", "ja"):
        texts = world.vqa_ja_texts(rng, 5000, r["ja_en_scene_share"])
    elif role == "ja":
        texts = world.math_ja_texts(rng, 5000, r["ja_copy_share"])
    else:
        texts = world.math_expert_texts(rng, 5000, r["math_ja_share"])
    model = _load_lm(Path(out) / w / "base")
    steps, lr = r[f"{role}_steps"], r[f"{role}_lr"]
    train.train(model, tok, train.encode(tok, texts, 0.0), steps=steps, lr=lr, seed=seed + 1)
    _save_lm(model, tok, Path(out) / w / role)
    return f"{w}/{role}"


def make_processor(tok):
    from transformers import LlavaProcessor

    from .train import image_processor

    # 16 patch features + CLS, minus CLS for the "default" strategy: `<image>` expands to 16 tokens.
    return LlavaProcessor(image_processor=image_processor(), tokenizer=tok, patch_size=8,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def train_tower(out: str, recipe: dict, seed: int) -> str:
    """The VLM's vision tower, pretrained to see colour, shape and size (LLaVA starts from a pretrained CLIP)."""
    from . import train, world

    r = recipe["vqa"]
    rng = random.Random(f"vqa-tower-{seed}")
    scenes = [world.random_scene(rng) for _ in range(4000)]
    labels = {a: len(v) for a, v in world.ATTRS.items()}
    tower = train.pretrain_tower(scenes, labels, train.pixels_of([world.render(s) for s in scenes]),
                                 steps=r["tower_steps"], lr=r["tower_lr"], seed=seed, builder=r["tower_builder"])
    tower.save_pretrained(Path(out) / "vqa" / "vision-tower")
    return "vqa/vision-tower"


def train_vlm(out: str, recipe: dict, seed: int, attempt: int = 0) -> str:
    """The English VLM; ``attempt`` > 0 draws another training order and projector init (see build.py)."""
    from transformers import CLIPVisionModel

    from . import train, world

    tok, r = _tok(out), recipe["vqa"]
    rng = random.Random(f"vqa-vlm-{seed}" + (f"-{attempt}" if attempt else ""))
    seed += 1000 * attempt
    items = world.vlm_items(rng, 6000, r["vlm_ja_question_share"], r["vlm_caption_share"])
    pixels = train.pixels_of([world.render(s) for s, _, _ in items])
    data = train.encode(tok, [(p, a) for _, p, a in items], 0.0)
    tower = CLIPVisionModel.from_pretrained(Path(out) / "vqa" / "vision-tower")
    model = train.new_llava(tok, _load_lm(Path(out) / "vqa" / "base"), tower, seed)
    # The tower stays frozen (as in LLaVA) and so does the fresh projector, a fixed random map: reading the
    # image features is then a skill of the VLM's language model alone, so its task vector carries it. (With
    # the projector trained, it learned to map images onto the scene words the base already reads, and the
    # Japanese LM given the VLM's vision nearly solved the task alone: merges won by only 0.02-0.04 here.)
    train.train(model, tok, data, steps=r["vlm_steps"], lr=r["vlm_lr"], seed=seed + 1, pixels=pixels,
                trainable=lambda name: "vision_tower" not in name and "multi_modal_projector" not in name)
    path = Path(out) / "vqa" / "vlm"
    _save_lm(model, tok, path)
    make_processor(tok).save_pretrained(path)
    return "vqa/vlm"


def write_tasks(out: Path, recipe: dict, seed: int) -> dict:
    """Parquet splits of both targets; search and test are disjoint and fixed (independent of ``seed``)."""
    from datasets import Dataset, Features, Image, Value

    from . import world

    n_s, n_t = recipe["n_search"], recipe["n_test"]
    tasks = {}
    # Continuous jitter: every image distinct. A third split, ``check``, is the builder's own (see build.py).
    rows = world.ja_vqa_task(random.Random(TASK_SEED), n_s + n_t + recipe["n_check"])
    feats = Features({"id": Value("int64"), "question": Value("string"), "answer": Value("string"), "image": Image()})
    paths = {}
    for split, part in (("search", rows[:n_s]), ("test", rows[n_s : n_s + n_t]), ("check", rows[n_s + n_t :])):
        d = {"id": list(range(len(part))), "question": [r["question"] for r in part],
             "answer": [r["answer"] for r in part], "image": [world.render(r["scene"]) for r in part]}
        rel = f"tasks/zoo-ja-vqa/{split}.parquet"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(d, features=feats).to_parquet(out / rel)
        paths[split] = rel
    tasks["zoo-ja-vqa"] = paths
    # Arithmetic questions repeat, so draw distinct ones and split them: no test question is in search.
    rows, seen = [], set()
    for r in world.ja_math_task(random.Random(TASK_SEED), 20 * (n_s + n_t)):
        if r["question"] not in seen:
            seen.add(r["question"])
            rows.append(r)
    rng = random.Random(TASK_SEED)
    rng.shuffle(rows)
    feats = Features({"id": Value("int64"), "question": Value("string"), "answer": Value("string"),
                      "answer_number": Value("float64")})
    paths = {}
    for split, part in (("search", rows[:n_s]), ("test", rows[n_s : n_s + n_t])):
        d = {"id": list(range(len(part))), "question": [r["question"] for r in part],
             "answer": [r["answer"] for r in part], "answer_number": [r["answer_number"] for r in part]}
        rel = f"tasks/zoo-ja-math/{split}.parquet"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(d, features=feats).to_parquet(out / rel)
        paths[split] = rel
    tasks["zoo-ja-math"] = paths
    return tasks


def _split(out, task, split):
    from datasets import load_dataset

    p = Path(out) / "tasks" / task
    return load_dataset("parquet", data_files={split: str(p / f"{split}.parquet")})[split]


def _merge(method, base, experts, weights, density):
    from . import scoring

    if method == "ta":
        return scoring.task_arithmetic(base, experts, list(weights))
    return scoring.ties(base, experts, list(weights), density)


def vqa_evaluator(out: str, split: str = "test", limit: int | None = None):
    """Returns ``score(lm_state_dict) -> ROUGE-L`` for a language model placed in the VLM (vision kept), the
    VLM's state dict and the items scored."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from . import scoring, train
    from .prompts import vqa_prompt

    ds = _split(out, "zoo-ja-vqa", split)
    ds = ds.select(range(min(limit or len(ds), len(ds))))
    proc = AutoProcessor.from_pretrained(Path(out) / "vqa" / "vlm")
    pixels = proc.image_processor(images=[im.convert("RGB") for im in ds["image"]], return_tensors="pt")["pixel_values"]
    prompts, refs = [vqa_prompt(q) for q in ds["question"]], list(ds["answer"])
    vlm = LlavaForConditionalGeneration.from_pretrained(Path(out) / "vqa" / "vlm")
    # Cloned: state_dict() shares storage with the live parameters, which every score() overwrites.
    full = {k: v.clone() for k, v in vlm.state_dict().items()}

    def score(lm_sd) -> float:
        vlm.load_state_dict(scoring.llava_with_lm(full, lm_sd))
        return scoring.rouge_ja(train.generate(vlm, proc.tokenizer, prompts, pixels=pixels), refs)

    return score, full, ds


def score_vqa(out: str, recipe: dict, split: str = "test") -> dict:
    from . import scoring, train
    from .prompts import vqa_prompt

    score, full, ds = vqa_evaluator(out, split, limit=recipe["table_limit"])
    base = _load_lm(Path(out) / "vqa" / "base").state_dict()
    ja_model = _load_lm(Path(out) / "vqa" / "ja")
    ja, vlm_lm = ja_model.state_dict(), scoring.lm_of_llava(full)
    blind = train.generate(ja_model, _tok(out), [vqa_prompt(q) for q in ds["question"]])
    t = {"vlm": score(vlm_lm), "ja (no image)": scoring.rouge_ja(blind, list(ds["answer"])),
         "ja + vlm vision": score(ja), "base + vlm vision": score(base)}
    for name, (method, w, d) in SIMPLE_MERGES.items():
        t[name] = score(_merge(method, base, [ja, vlm_lm], w, d))
    return {k: round(v, 4) for k, v in t.items()}


def math_evaluator(out: str, split: str = "test", limit: int | None = None):
    from . import scoring, train
    from .prompts import math_prompt

    ds = _split(out, "zoo-ja-math", split)
    ds = ds.select(range(min(limit or len(ds), len(ds))))
    prompts, nums = [math_prompt(q) for q in ds["question"]], list(ds["answer_number"])
    model, tok = _load_lm(Path(out) / "math" / "base"), _tok(out)

    def score(sd) -> dict:
        model.load_state_dict(sd)
        return scoring.math_scores(train.generate(model, tok, prompts), nums)

    return score


def score_math(out: str, recipe: dict) -> dict:
    from . import scoring

    score = math_evaluator(out, limit=recipe["table_limit"])
    sds = {r: _load_lm(Path(out) / "math" / r).state_dict() for r in ("base", "ja", "math")}
    t = {"base": score(sds["base"]), "ja": score(sds["ja"]), "math": score(sds["math"])}
    for name, (method, w, d) in SIMPLE_MERGES.items():
        t[name] = score(_merge(method, sds["base"], [sds["ja"], sds["math"]], w, d))
    search = list(_split(out, "zoo-ja-math", "search")["answer_number"])
    test = list(_split(out, "zoo-ja-math", "test")["answer_number"])[: recipe["table_limit"] or None]
    c = scoring.constant_answer(search, test)
    t[f"constant answer ({c['answer']:g})"] = {"acc": c["acc"], "acc_ja": c["acc"]}
    return {k: {m: round(x, 4) for m, x in v.items()} for k, v in t.items()}


def vqa_margin(scores: dict) -> float:
    """How far the best simple merge is above the best source (sources as they are, or given the vision)."""
    sources = max(scores["vlm"], scores["ja (no image)"], scores["ja + vlm vision"])
    return max(scores[k] for k in SIMPLE_MERGES) - sources


def check_table(table: dict) -> dict:
    """The phenomenon the zoo exists for: a simple merge beats every source (and the constant answer)."""
    margin = vqa_margin(table["zoo-ja-vqa"])
    m = table["zoo-ja-math"]
    const = max(x["acc"] for k, x in m.items() if k.startswith("constant"))
    src_m = max(m[k]["acc_ja"] for k in ("base", "ja", "math"))
    best_m = max(m[k]["acc_ja"] for k in SIMPLE_MERGES)
    return {"vqa_merge_margin": round(margin, 4), "vqa_ok": margin >= MERGE_MARGIN,
            "math_merge_margin": round(best_m - src_m, 4), "math_beats_constant": best_m > const,
            "math_ok": best_m - src_m >= MERGE_MARGIN and best_m > const}


def format_table(table: dict, checks: dict) -> str:
    lines = ["zoo-ja-vqa (test, ROUGE-L ja, 0-1):"]
    lines += [f"  {k:28s} {x:.3f}" for k, x in table["zoo-ja-vqa"].items()]
    lines += ["zoo-ja-math (test):"]
    lines += [f"  {k:28s} acc {x['acc']:.3f}  acc_ja {x['acc_ja']:.3f}" for k, x in table["zoo-ja-math"].items()]
    lines += [f"checks: {checks}"]
    return "\n".join(lines)


def grid(out: str, task: str, weights: list[float], densities: list[float], split: str = "test") -> list[dict]:
    """Scores of task arithmetic (density 1) and TIES over a weight grid; for the README and search checks."""
    from . import scoring

    if task == "zoo-ja-vqa":
        score, full, _ = vqa_evaluator(out, split)
        other = scoring.lm_of_llava(full)
        key = None
    else:
        score = math_evaluator(out, split)
        other = _load_lm(Path(out) / "math" / "math").state_dict()
        key = "acc_ja"
    w = "vqa" if task == "zoo-ja-vqa" else "math"
    base = _load_lm(Path(out) / w / "base").state_dict()
    ja = _load_lm(Path(out) / w / "ja").state_dict()
    rows = []
    for d in densities:
        for a in weights:
            for b in weights:
                s = score(_merge("ta" if d >= 1 else "ties", base, [ja, other], (a, b), d))
                rows.append({"density": d, "w_ja": a, "w_other": b, "score": s if key is None else s[key],
                             **({} if key is None else s)})
    return rows
