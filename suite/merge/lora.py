"""``model: BASE+LORA``: a PEFT LoRA adapter merged into its base model's weights, as mergekit merges it.

mergekit loads BASE, applies the adapter with peft's ``merge_and_unload`` and reads the result. That is
W' = W + scaling * B @ A for each adapted linear weight (transposed for ``fan_in_fan_out`` layers such as
GPT-2's Conv1D), W' = W + scaling * (B @ A)^T for an adapted embedding, and a plain replacement for a
``modules_to_save`` tensor; scaling = lora_alpha / r (lora_alpha / sqrt(r) with ``use_rslora``), alpha
taken from ``alpha_pattern`` where a pattern names the module. The delta is computed in float32 and the
sum rounded to W's dtype (peft upcasts the adapter and adds in place). Read from
``adapter_model.safetensors`` and ``adapter_config.json``; no peft needed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from evosuite.errors import ConfigError, ModelError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: What peft puts before a module's name in the adapter's keys.
PEFT_PREFIX = "base_model.model."
_LINEAR = re.compile(r"^(.*)\.lora_([AB])\.weight$")
_EMBEDDING = re.compile(r"^(.*)\.lora_embedding_([AB])$")


def split_lora_ref(ref: str) -> tuple[str, str] | None:
    """(model, adapter) of a ``MODEL+LORA`` reference, or None for a plain model (a directory named with a
    ``+`` is a plain model)."""
    if "+" not in ref or Path(ref).expanduser().is_dir():
        return None
    parts = ref.split("+")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"model {ref!r} has more than one `+`", "write `MODEL+LORA_ADAPTER` (one `+`)")
    return parts[0], parts[1]


def _pattern_value(patterns: dict, module: str, default):
    """peft's ``rank_pattern``/``alpha_pattern`` lookup: the first key that matches the module name's end."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?{key}$", module):
            return value
    return default


@dataclass
class LoraAdapter:
    """The adapter's changes, by the base model's tensor name: (kind, A, B, scaling) with kind "dense",
    "dense_t" (fan_in_fan_out), "embedding", or ("replace", tensor, None, 0)."""

    ref: str
    changes: dict[str, tuple[str, torch.Tensor, torch.Tensor | None, float]]

    def apply(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` (the base's tensor ``name``) with the adapter merged in, in the base's dtype."""
        change = self.changes.get(name)
        if change is None:
            return weight
        kind, a, b, scaling = change
        if kind == "replace":
            return a.to(weight.dtype)
        delta = b.to(torch.float32) @ a.to(torch.float32)
        if kind in ("dense_t", "embedding"):
            delta = delta.T
        return (weight.to(torch.float32) + delta * scaling).to(weight.dtype)


def load_adapter(ref: str, adapter_dir: Path, shapes: dict[str, tuple[int, ...]]) -> LoraAdapter:
    """Read a PEFT LoRA adapter and check every change against the base's tensor ``shapes``."""
    weights_path, config_path = adapter_dir / ADAPTER_WEIGHTS, adapter_dir / ADAPTER_CONFIG
    if not weights_path.is_file() or not config_path.is_file():
        raise ModelError(f"LoRA adapter {ref!r} has no {ADAPTER_WEIGHTS} and {ADAPTER_CONFIG} in {adapter_dir}",
                         "save the adapter with peft's save_pretrained (safetensors)")
    try:
        config = json.loads(config_path.read_text())
        tensors = load_file(str(weights_path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"LoRA adapter {ref!r} cannot be read: {exc}", "re-save the adapter") from None
    fix = "merge the adapter with peft's merge_and_unload and name the merged model instead"
    if config.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"adapter {ref!r} is a {config.get('peft_type')} adapter, not LoRA", fix)
    if config.get("use_dora"):
        raise ConfigError(f"LoRA adapter {ref!r} uses DoRA, which evosuite does not merge", fix)
    pairs: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    changes: dict[str, tuple] = {}
    for key, tensor in tensors.items():
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        if match := _LINEAR.match(name):
            pairs.setdefault(("dense", match.group(1)), {})[match.group(2)] = tensor
        elif match := _EMBEDDING.match(name):
            pairs.setdefault(("embedding", match.group(1)), {})[match.group(2)] = tensor
        elif "lora_" not in name and name in shapes and tuple(tensor.shape) == shapes[name]:
            changes[name] = ("replace", tensor, None, 0.0)  # a modules_to_save copy
        else:
            raise ConfigError(f"LoRA adapter {ref!r} has tensor {key}, which matches no tensor of its base", fix)
    for (kind, module), ab in pairs.items():
        target = f"{module}.weight"
        if set(ab) != {"A", "B"} or target not in shapes:
            raise ConfigError(f"LoRA adapter {ref!r} changes {module}, which its base model lacks", fix)
        rank = ab["A"].shape[0]
        alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
        scaling = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        if kind == "dense" and config.get("fan_in_fan_out"):
            kind = "dense_t"
        out_shape = (ab["B"].shape[0], ab["A"].shape[1])
        if kind != "dense":
            out_shape = out_shape[::-1]
        if out_shape != tuple(shapes[target]):
            raise ConfigError(f"LoRA adapter {ref!r} gives {target} shape {list(out_shape)}, its base "
                              f"{list(shapes[target])}", "use the adapter trained on this base model")
        changes[target] = (kind, ab["A"], ab["B"], scaling)
    return LoraAdapter(ref, changes)


def resolve_adapter_dir(ref: str, resolve: Callable[[str], Path]) -> Path:
    """The adapter's directory (a local path, or a downloaded hub snapshot through ``resolve``)."""
    try:
        return resolve(ref)
    except ModelError:
        raise ModelError(f"LoRA adapter {ref!r} not found",
                         "give a local adapter directory (or download the hub adapter first)") from None
