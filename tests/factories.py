"""Tiny random Hugging Face models written to disk in seconds, for tests that need no trained zoo."""

from evosuite.testing.models import CHARS, SPECIALS, char_tokenizer, text_config, write_llm, write_vlm  # noqa: F401


def write_checkpoint(path, seed, shapes, *, layers, tokenizer=False):
    """A Llama-named checkpoint of seeded random tensors (``shapes``: name -> shape) with a minimal config.json,
    written without transformers: the merge engine's own inputs. Returns the tensors."""
    import json

    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}
    path.mkdir(parents=True)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": layers,
                                                  "torch_dtype": "float32"}))
    if tokenizer:
        (path / "tokenizer_config.json").write_text('{"model_max_length": 16}')
    return tensors
