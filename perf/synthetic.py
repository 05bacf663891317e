"""Seeded synthetic Llama families for the perf scripts' ``--size``: a base and fine-tunes, built on the fly.

    mini   hidden 128, 4 layers (smoke tests)               ~1M
    tiny   hidden 512, 8 layers, the char vocabulary        ~25M parameters
    134m   hidden 768, 12 layers, vocab 32000 (P1's zoo)    ~134M
    1b     hidden 2048, 22 layers, 4 KV heads, vocab 32000   ~1.1B (TinyLlama's shape)

Model 0 is the base (N(0, 0.02) weights, norms 1); model k >= 1 is the base plus 0.01 N(0, 1) noise, a
"fine-tune". Each tensor is drawn from its own generator (seed, model, tensor name), so a family is built
one tensor at a time: building holds one model in its target dtype, never a float32 copy of a big one.
Every model directory has a config, safetensors weights and the char tokenizer, so ``load_model`` loads it
and it generates text.
"""

from __future__ import annotations

import zlib
from pathlib import Path

#: name -> (hidden, intermediate, layers, heads, kv heads, vocab or None for the char tokenizer's)
SIZES = {
    "mini": (128, 344, 4, 4, 4, None),
    "tiny": (512, 1376, 8, 8, 8, None),
    "134m": (768, 2048, 12, 12, 12, 32000),
    "1b": (2048, 5632, 22, 32, 4, 32000),
}
#: The dtypes a family can be built in (``--dtype`` of the scripts that build one).
DTYPES = ("float32", "bfloat16", "float16")


def llama_config(size: str):
    from transformers import LlamaConfig

    from evosuite.testing.models import CHARS, SPECIALS

    hidden, inter, layers, heads, kv_heads, vocab = SIZES[size]
    return LlamaConfig(vocab_size=vocab or len(SPECIALS) + len(CHARS), hidden_size=hidden, intermediate_size=inter,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0)


def parameter_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of one model, without allocating it (built on the meta device)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(size))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def parameter_count(size: str) -> int:
    import math

    return sum(math.prod(s) for s in parameter_shapes(size).values())


def _draw(shape, seed: int, model: int, name: str):
    import torch

    g = torch.Generator().manual_seed((seed * 7919 + model * 104729 + zlib.crc32(name.encode())) % (2**63 - 1))
    return torch.randn(shape, generator=g)


def build_family(root: str | Path, size: str, *, count: int = 3, dtype: str = "float32",
                 seed: int = 0) -> list[Path]:
    """Write ``count`` models (base first) under ``root`` (m0, m1, ...); reuses ones already there."""
    import torch
    from safetensors.torch import save_file

    from evosuite.testing.models import char_tokenizer

    root = Path(root)
    shapes = parameter_shapes(size)
    target = getattr(torch, dtype)
    config = llama_config(size)
    config.dtype = dtype
    config.architectures = ["LlamaForCausalLM"]  # mergekit picks its architecture by this
    paths = []
    for k in range(count):
        out = root / f"m{k}"
        paths.append(out)
        if (out / "model.safetensors").is_file():
            continue
        out.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, shape in shapes.items():
            if name.endswith("norm.weight"):
                value = torch.ones(shape)
            else:
                value = _draw(shape, seed, 0, name).mul_(0.02)
            if k:
                value.add_(_draw(shape, seed, k, name).mul_(0.01))
            tensors[name] = value.to(target)
            del value
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        config.save_pretrained(out)
        char_tokenizer().save_pretrained(out)
    return paths
