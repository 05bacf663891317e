"""Model construction, the training loop and greedy generation for the zoo (CPU, one thread per process)."""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from .prompts import IMAGE_TOKEN

N_IMAGE_TOKENS = 16  # (32 / 8) ** 2 patches; the CLS feature is dropped ("default" strategy)


def llama_config(tok, hidden: int, layers: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=160, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )


def new_llama(tok, hidden: int, layers: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(tok, hidden, layers))


def vision_config() -> CLIPVisionConfig:
    """The tiny CLIP vision tower: 32 px images, patch 8 (16 patch features), hidden 64, 2 layers."""
    return CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=2, projection_dim=64)


def open_clip_vision_cfg() -> dict:
    """``vision_config()``'s tower in OpenCLIP's terms (the ``vision_cfg`` of ``open_clip.CLIP``)."""
    c = vision_config()
    return {"image_size": c.image_size, "layers": c.num_hidden_layers, "width": c.hidden_size,
            "head_width": c.hidden_size // c.num_attention_heads, "patch_size": c.patch_size,
            "mlp_ratio": c.intermediate_size / c.hidden_size}


def _transformers_tower():
    tower = CLIPVisionModel(vision_config())
    return tower, lambda pixels: tower(pixel_values=pixels).last_hidden_state[:, 1:]


def _open_clip_tower():
    import open_clip

    # open_clip.CLIP always builds a text tower too: the smallest one, thrown away.
    visual = open_clip.CLIP(embed_dim=vision_config().projection_dim, vision_cfg=open_clip_vision_cfg(),
                            text_cfg={"layers": 1, "width": 64, "heads": 1}).visual
    visual.output_tokens = True
    return visual, lambda pixels: visual(pixels)[1]


def pretrain_tower(scenes: list[dict], labels: dict[str, int], pixels: torch.Tensor, *, steps: int, lr: float,
                   seed: int, builder: str = "transformers", batch: int = 64) -> CLIPVisionModel:
    """A vision tower that already sees, as LLaVA starts from a pretrained CLIP: the mean of its patch
    features (what the projector reads) must classify each attribute; ``labels`` maps attribute -> classes.

    ``builder="open_clip"`` builds and trains the tower with OpenCLIP, then converts it to the
    ``CLIPVisionModel`` a LLaVA checkpoint holds (``evosuite.plugins.openclip_vision``).
    """
    torch.manual_seed(seed)
    tower, patch_features = {"transformers": _transformers_tower, "open_clip": _open_clip_tower}[builder]()
    width = vision_config().hidden_size
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(width, n) for a, n in labels.items()})
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rng = random.Random(seed)
    tower.train()
    for _ in range(steps):
        idx = [rng.randrange(len(scenes)) for _ in range(batch)]
        feats = patch_features(pixels[idx]).mean(1)
        loss = sum(F.cross_entropy(heads[a](feats), torch.tensor([scenes[i][a] for i in idx])) for a in labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    tower.eval()
    if builder == "open_clip":
        from evosuite.plugins.openclip_vision import to_hf_vision_model

        return to_hf_vision_model(tower)
    return tower


def new_llava(tok, lm: LlamaForCausalLM, tower: CLIPVisionModel, seed: int) -> LlavaForConditionalGeneration:
    """A LLaVA with a pretrained ``tower`` and a fresh projector, whose language model starts as a copy of
    ``lm`` (as LLaVA-1.6-Mistral starts from CLIP and Mistral)."""
    torch.manual_seed(seed)
    vision = tower.config
    image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    cfg = LlavaConfig(vision_config=vision, text_config=lm.config, image_token_id=image_token_id,
                      image_seq_length=N_IMAGE_TOKENS, vision_feature_layer=-1,
                      vision_feature_select_strategy="default", projector_hidden_act="gelu")
    cfg.pad_token_id = tok.pad_token_id
    model = LlavaForConditionalGeneration(cfg)
    model.model.vision_tower.load_state_dict(tower.state_dict())
    model.get_decoder().load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    return model


def expand_image(text: str) -> str:
    """What the processor does: one `<image>` becomes one token per image feature."""
    return text.replace(IMAGE_TOKEN, IMAGE_TOKEN * N_IMAGE_TOKENS)


def encode(tok, items: list[tuple[str, str]], prompt_weight: float) -> list[tuple[list[int], list[float]]]:
    out = []
    for prompt, answer in items:
        p = tok(expand_image(prompt), add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append((p + a, [prompt_weight] * len(p) + [1.0] * len(a)))
    return out


def _batch(rows, pad_id: int):
    n = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    w = torch.zeros((len(rows), n))
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (t, wt) in enumerate(rows):
        ids[i, : len(t)] = torch.tensor(t)
        w[i, : len(t)] = torch.tensor(wt)
        mask[i, : len(t)] = 1
    return ids, w, mask


def train(model, tok, data, *, steps: int, lr: float, seed: int, batch: int = 32, pixels=None,
          trainable=None, warmup: int = 30) -> None:
    """AdamW with warmup then cosine. ``data`` is from ``encode``; with ``pixels`` (one tensor row per data
    row) the model is a LLaVA. ``trainable`` picks parameter names to train (default all)."""
    rng = random.Random(seed)
    params = [p for n, p in model.named_parameters() if trainable is None or trainable(n)]
    for n, p in model.named_parameters():
        p.requires_grad_(trainable is None or trainable(n))
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    for _ in range(steps):
        idx = [rng.randrange(len(data)) for _ in range(batch)]
        ids, w, mask = _batch([data[i] for i in idx], tok.pad_token_id)
        kw = {"pixel_values": pixels[idx]} if pixels is not None else {}
        logits = model(input_ids=ids, attention_mask=mask, **kw).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none")
        wt = w[:, 1:].reshape(-1)
        loss = (loss * wt).sum() / wt.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()


@torch.no_grad()
def generate(model, tok, prompts: list[str], *, pixels=None, max_new_tokens: int = 12, batch: int = 100) -> list[str]:
    """Greedy answers, decoded without special tokens (left padding, as the benchmarks do)."""
    model.eval()
    out = []
    for s in range(0, len(prompts), batch):
        enc = tok([expand_image(p) for p in prompts[s : s + batch]], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        kw = {"pixel_values": pixels[s : s + batch]} if pixels is not None else {}
        gen = model.generate(**enc, **kw, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [o.strip() for o in out]


def image_processor():
    """CLIP preprocessing at 32 px; saved with the VLM so `AutoProcessor` reproduces it."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def pixels_of(images, processor=None) -> torch.Tensor:
    processor = processor or image_processor()
    return processor(images=images, return_tensors="pt")["pixel_values"]
