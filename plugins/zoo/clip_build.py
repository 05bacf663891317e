"""Build (or reuse) the seeded CLIP zoo: a tiny OpenCLIP base, two experts on disjoint label subsets, and the
union classification task.

- ``base``: a tiny OpenCLIP ViT (32 px, patch 8, width 64, 2 layers) with a tiny text transformer (context 16,
  width 64, 2 layers, open_clip's own BPE tokenizer, which ships inside the wheel: offline), briefly pretrained
  with CLIP's contrastive loss on captions of all 24 classes: it knows the world a little (about 60%).
- ``A`` / ``B``: the base fine-tuned hard (300 steps at 2e-3, the text tower at 0.3x the image tower's
  learning rate) on the images of subset A (red, blue, green) or subset B (purple, orange, pink) only, as
  zero-shot classifiers over all 24 class prompts: each gets good at its colours and forgets the others
  (about 0.45 on the union, little above half of it). Their task vectors are long, so the best merge takes a
  small share of each, and an uneven one (A's colours are the harder half: about 0.5 of A and 0.25 of B
  on the check split, per layer more or less): equal weights, task arithmetic (1, 1) and TIES overshoot,
  as Task Arithmetic (Ilharco et al., 2023) found its scaling best well below 1 on CLIP.
- ``checks`` in ``zoo.json``: the builder's self-check on its own ``check`` split (``clip_check``).
- Token embeddings stay at their random initialization throughout (49408 rows, a few dozen used: training
  them doubled the step time), and so does the temperature ``logit_scale``.
- ``tasks/zoo-clip-union/{search,test,check}.parquet``: held-out images of all 24 classes (``image``, ``label``,
  ``label_id``, ``subset``), loaded with ``datasets`` like the other zoo tasks; ``check`` is the builder's own.

Every model directory is what ``open_clip.create_model_and_transforms("local-dir:PATH")`` loads. Training runs
in this process with one torch thread. The cache key hashes the recipe and the modules the data depend on.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Callable

from evosuite import cache
from evosuite.cache import build_atomically, cache_dir

CLIP_ZOO_VERSION = 2
MODULES = ("clip_build.py", "clip_check.py", "clip_world.py", "world.py")
TASK_SEED = 20240321
TASK = "zoo-clip-union"

#: The tiny OpenCLIP architecture (``open_clip_config.json``'s ``model_cfg``).
MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                 "mlp_ratio": 2.0},
}
PREPROCESS_CFG = {"size": [32, 32], "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073],
                  "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic", "resize_mode": "shortest",
                  "fill_color": 0}

RECIPES: dict[str, dict] = {
    "full": {"pool": 1024, "base_steps": 150, "base_lr": 2e-3,
             "experts": {"A": {"steps": 300, "lr": 2e-3}, "B": {"steps": 300, "lr": 2e-3}},
             "expert_text_lr_scale": 0.3, "batch": 64, "n_search": 480, "n_test": 960, "n_check": 480},
    "test": {"pool": 256, "base_steps": 40, "base_lr": 2e-3,
             "experts": {"A": {"steps": 40, "lr": 2e-3}, "B": {"steps": 40, "lr": 2e-3}},
             "expert_text_lr_scale": 0.3, "batch": 32, "n_search": 96, "n_test": 144, "n_check": 96},
}


def recipe_hash(variant: str) -> str:
    """Changes when the recipe, the architecture or a module the build depends on changes."""
    return cache.recipe_hash([RECIPES[variant], MODEL_CFG, PREPROCESS_CFG],
                             [Path(__file__).parent / name for name in MODULES])


def clip_zoo_path(variant: str = "full", seed: int = 0) -> Path:
    return cache_dir() / "zoo-clip" / f"v{CLIP_ZOO_VERSION}-{recipe_hash(variant)}" / f"{variant}-seed{seed}"


def build_clip_zoo(variant: str = "full", seed: int = 0, progress: Callable[[str], None] | None = None, *,
                   root: Path | None = None, force: bool = False) -> Path:
    """Return the CLIP zoo directory, building it first when it is missing (or ``force``)."""
    if variant not in RECIPES:
        raise ValueError(f"unknown clip zoo variant {variant!r}; known: {sorted(RECIPES)}")
    say = progress or (lambda msg: None)
    root = Path(root) if root is not None else clip_zoo_path(variant, seed)
    return build_atomically(root, lambda tmp: _build_into(tmp, variant, seed, say), marker="zoo.json", say=say,
                            label="clip zoo", force=force)


# --- training --------------------------------------------------------------------------------------------
def _transform():
    import open_clip

    return open_clip.image_transform(MODEL_CFG["vision_cfg"]["image_size"], is_train=False,
                                     mean=PREPROCESS_CFG["mean"], std=PREPROCESS_CFG["std"])


def _to_tensor(image):
    """What the validation transform does to a 32 px RGB image (its resize and crop are no-ops), minus PIL's
    bicubic pass: a few times faster, for the training pool."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(PREPROCESS_CFG["mean"])[:, None, None]
    std = torch.tensor(PREPROCESS_CFG["std"])[:, None, None]
    return (x - mean) / std


class _Data:
    """A pool of rendered, preprocessed training images (rendering is slower than a training step), and
    tokenized captions cached per text."""

    def __init__(self, rng: random.Random, pool_size: int):
        import open_clip
        import torch

        from . import clip_world

        self.tokenizer = open_clip.tokenize  # open_clip's bundled BPE (SimpleTokenizer), offline
        self._tokens: dict[str, object] = {}
        self.scenes = [clip_world.scene(rng) for _ in range(pool_size)]
        self.images = torch.stack([_to_tensor(clip_world.render(s)) for s in self.scenes])
        self.by_colour: dict[int, list[int]] = {}
        for i, s in enumerate(self.scenes):
            self.by_colour.setdefault(s["colour"], []).append(i)

    def tokens(self, texts):
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self._tokens]
        if missing:
            for t, row in zip(missing, self.tokenizer(missing, context_length=MODEL_CFG["text_cfg"]["context_length"])):
                self._tokens[t] = row
        return torch.stack([self._tokens[t] for t in texts])

    def batch(self, rng: random.Random, n: int, colours=None):
        """``n`` pool images whose colours are in ``colours``, a fresh caption each, and their classes."""
        from . import clip_world

        pool = [i for c in (colours if colours is not None else self.by_colour) for i in self.by_colour[c]]
        picked = [rng.choice(pool) for _ in range(n)]
        scenes = [self.scenes[i] for i in picked]
        texts = [clip_world.caption(s, rng) for s in scenes]
        return self.images[picked], self.tokens(texts), [(s["colour"], s["shape"]) for s in scenes]


def _new_model(seed: int):
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.CLIP(**MODEL_CFG)
    model.logit_scale.requires_grad_(False)  # a fixed temperature (1/0.07), never merged
    # Fixed random token embeddings: 49408 rows of which the world uses a few dozen; training them costs half a
    # step, and the text transformer learns to read them as they are.
    model.token_embedding.weight.requires_grad_(False)
    return model


def _contrastive_loss(model, images, tokens, classes):
    """CLIP's symmetric InfoNCE, with every pair of the same class counted as a positive (a batch of 24
    classes has many duplicates)."""
    import torch
    import torch.nn.functional as F

    img = model.encode_image(images, normalize=True)
    txt = model.encode_text(tokens, normalize=True)
    logits = model.logit_scale.exp() * img @ txt.T
    keys = torch.tensor([c * 16 + s for c, s in classes])
    same = (keys[:, None] == keys[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _classification_loss(model, images, heads, labels):
    import torch
    import torch.nn.functional as F

    classes = model.encode_text(heads, normalize=True)
    logits = model.logit_scale.exp() * model.encode_image(images, normalize=True) @ classes.T
    return F.cross_entropy(logits, torch.tensor(labels))


def _train(model, data: _Data, rng: random.Random, steps: int, lr: float, batch: int, colours=None,
           text_lr: float | None = None) -> None:
    """AdamW with a short warm-up; ``text_lr`` sets the text tower's own learning rate (0 freezes it)."""
    import torch

    text_lr = lr if text_lr is None else text_lr
    vision = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("visual.")]
    text = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("visual.")]
    groups = [{"params": vision, "lr": lr}] + ([{"params": text, "lr": text_lr}] if text_lr > 0 else [])
    for p in text if text_lr <= 0 else ():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 10))
    model.train()
    heads = None
    if colours is not None:  # an expert: zero-shot classification of its subset's images over every class prompt
        from . import clip_world

        heads = data.tokens([t.format(c) for c in clip_world.class_labels() for t in clip_world.TEMPLATES])
        index = {pair: i for i, pair in enumerate(clip_world.classes())}
    for _ in range(steps):
        images, tokens, classes = data.batch(rng, batch, colours)
        if heads is None:
            loss = _contrastive_loss(model, images, tokens, classes)
        else:
            loss = _classification_loss(model, images, heads, [index[c] for c in classes])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    for p in text:
        p.requires_grad_(True)
    model.eval()


def _save(model, path: Path) -> None:
    from safetensors.torch import save_file

    from evosuite.plugins.clip import CONFIG_NAME, WEIGHTS_NAME

    path.mkdir(parents=True)
    (path / CONFIG_NAME).write_text(json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}, indent=2))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path / WEIGHTS_NAME),
              metadata={"format": "pt"})


def _write_tasks(out: Path, recipe: dict) -> dict:
    from datasets import Dataset, Features, Image, Value

    from . import clip_world

    feats = Features({"id": Value("int64"), "image": Image(), "label": Value("string"), "label_id": Value("int64"),
                      "subset": Value("string")})
    rng = random.Random(TASK_SEED)
    paths = {}
    for split in ("search", "test", "check"):
        # The builder's own check split draws from its own stream: search and test stay as they were.
        rows = clip_world.task_rows(rng if split != "check" else random.Random(TASK_SEED + 1), recipe[f"n_{split}"])
        data = {"id": [r["id"] for r in rows], "image": [clip_world.render(r["scene"]) for r in rows],
                "label": [r["label"] for r in rows], "label_id": [r["label_id"] for r in rows],
                "subset": [r["subset"] for r in rows]}
        rel = f"tasks/{TASK}/{split}.parquet"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(data, features=feats).to_parquet(str(out / rel))
        paths[split] = rel
    return paths


def _accuracy(state_dicts: dict[str, dict], out: Path, split: str = "test") -> dict[str, dict[str, float]]:
    """Zero-shot accuracy of each state dict on ``split`` (all classes, and per subset)."""
    import torch
    from datasets import load_dataset

    from . import clip_world

    rows = load_dataset("parquet", data_files={split: str(out / f"tasks/{TASK}/{split}.parquet")}, split=split)
    transform = _transform()
    images = torch.stack([transform(im.convert("RGB")) for im in rows["image"]])
    labels = torch.tensor(rows["label_id"])
    subsets = rows["subset"]
    import open_clip

    tokens = open_clip.tokenize([t.format(c) for c in clip_world.class_labels() for t in clip_world.TEMPLATES],
                                context_length=MODEL_CFG["text_cfg"]["context_length"])
    model = _new_model(0)
    table = {}
    for name, sd in state_dicts.items():
        model.load_state_dict(sd)
        with torch.inference_mode():
            classes = model.encode_text(tokens, normalize=True)
            pred = (model.encode_image(images, normalize=True) @ classes.T).argmax(1)
        right = (pred == labels).float()
        table[name] = {"union": round(right.mean().item(), 4)}
        for subset in clip_world.SUBSETS:
            mask = torch.tensor([s == subset for s in subsets])
            table[name][subset] = round(right[mask].mean().item(), 4)
    return table


def _mix(base: dict, experts: list[dict], weights: list[float]) -> dict:
    return {k: base[k] + sum(w * (e[k] - base[k]) for w, e in zip(weights, experts)) if k != "logit_scale" else base[k]
            for k in base}


def _build_into(out: Path, variant: str, seed: int, say: Callable[[str], None]) -> None:
    import torch

    from . import clip_check, clip_world

    t0 = time.time()
    recipe = RECIPES[variant]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out.mkdir(parents=True)
        tasks = _write_tasks(out, recipe)
        data = _Data(random.Random(seed * 1000), recipe["pool"])
        base = _new_model(seed)
        _train(base, data, random.Random(seed * 1000 + 1), recipe["base_steps"], recipe["base_lr"], recipe["batch"])
        _save(base, out / "base")
        say(f"clip zoo: base trained ({time.time() - t0:.0f}s)")
        state = {"base": {k: v.clone() for k, v in base.state_dict().items()}}
        for k, (subset, colours) in enumerate(clip_world.SUBSETS.items()):
            expert = _new_model(seed)
            expert.load_state_dict(state["base"])
            how = recipe["experts"][subset]
            _train(expert, data, random.Random(seed * 1000 + 2 + k), how["steps"], how["lr"], recipe["batch"], colours,
                   text_lr=how["lr"] * recipe["expert_text_lr_scale"])
            _save(expert, out / subset)
            state[subset] = {k2: v.clone() for k2, v in expert.state_dict().items()}
            say(f"clip zoo: expert {subset} trained ({time.time() - t0:.0f}s)")
        experts = [state[s] for s in clip_world.SUBSETS]
        state["average (0.5, 0.5)"] = _mix(state["base"], experts, [0.5, 0.5])
        state["task arithmetic (1, 1)"] = _mix(state["base"], experts, [1.0, 1.0])
        table = _accuracy(state, out)
        merges = {name: _mix(state["base"], experts, list(w)) for name, w in clip_check.grid().items()}
        on_check = _accuracy({"A": state["A"], "B": state["B"], **merges}, out, "check")
        checks = clip_check.verdict({name: row["union"] for name, row in on_check.items()})
    finally:
        torch.set_num_threads(threads)
    meta = {
        "version": CLIP_ZOO_VERSION, "variant": variant, "seed": seed, "recipe_hash": recipe_hash(variant),
        "models": {"base": "base", "A": "A", "B": "B"},
        "subsets": {name: [clip_world.label(c, s) for c, s in clip_world.classes(colours)]
                    for name, colours in clip_world.SUBSETS.items()},
        "classes": clip_world.class_labels(), "templates": list(clip_world.TEMPLATES),
        "tasks": {TASK: tasks}, "table": table, "checks": checks, "build_seconds": round(time.time() - t0, 1),
    }
    (out / "zoo.json").write_text(json.dumps(meta, indent=2))
    for name, row in table.items():
        say(f"clip zoo: {name:24s} union {row['union']:.3f}  A {row['A']:.3f}  B {row['B']:.3f}")
    say(clip_check.describe(checks))
    say(f"clip zoo: built {variant} seed {seed} in {time.time() - t0:.0f}s")
