"""Loading models through whichever registered adapter claims them, and checking they can be merged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from evosuite.api import LoadedModel, check_options
from evosuite.errors import ModelError
from evosuite.plugin_manager import get_host


def read_model_config(name_or_path: str, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """``config.json`` of a local directory or hub id, as a dict: what adapters' ``detect`` is given."""
    local = Path(name_or_path) / "config.json"
    if local.is_file():
        try:
            return json.loads(local.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ModelError(f"{str(local)!r} is not valid JSON", "re-save the model's config.json") from None
    text = str(name_or_path)
    if not Path(text).exists() and (text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text):
        # A path, not a hub id (org/name): say so rather than pass on the hub's "Repo id must be..."
        raise ModelError(f"model path {text!r} does not exist", "check the path")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).to_dict()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot read the config of model {name_or_path!r}: {first}",
                         "give a local model directory or a hub id reachable from this machine") from None


def find_adapter(name_or_path: str, *, trust_remote_code: bool = False):
    """The registered adapter that claims the model: first any whose optional ``detect_path(name_or_path)``
    accepts the path or id itself (for families without a ``config.json``, e.g. OpenCLIP directories), then
    the one whose ``detect`` accepts the model's ``config.json``."""
    registry = get_host().registry("models")
    for _, adapter in registry:
        if adapter.detect_path(str(name_or_path)):
            return adapter
    config = read_model_config(name_or_path, trust_remote_code=trust_remote_code)
    for _, adapter in registry:
        if adapter.detect(config):
            return adapter
    raise ModelError(
        f"no model adapter accepts {name_or_path!r} (model_type {config.get('model_type')!r})",
        f"install a plugin for it, or name one with adapter=; adapters: {', '.join(registry.names())}",
    )


def load_model(name_or_path: str, *, adapter: str | None = None, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False, allow_pickle: bool = False,
               options: Mapping[str, Any] | None = None) -> LoadedModel:
    """Load a model from a local directory or hub id with the named adapter, or the one that detects it.

    ``options`` are the adapter's own (its class's ``options``, e.g. the vlm adapter's ``image_mode``).
    """
    chosen = (get_host().registry("models").get(adapter) if adapter
              else find_adapter(name_or_path, trust_remote_code=trust_remote_code))
    options = dict(options or {})
    check_options("model adapter", chosen.name, options, chosen.options)
    model = chosen.load(name_or_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                        allow_pickle=allow_pickle, **options)
    return _post_load(model, name_or_path)


def _post_load(model: LoadedModel, name_or_path: str) -> LoadedModel:
    """Let a merge space finish loading a result it saved as more than a standard model directory.

    Each registered merge space's ``MergeSpace.post_load(model, name_or_path)`` returns the model to use
    instead, or None to leave it as loaded.
    """
    for _, space in get_host().registry("spaces"):
        model = space.post_load(model, str(name_or_path)) or model
    return model


def check_mergeable(models: Mapping[str, LoadedModel], *, ignore_vocab_rows: bool = False) -> None:
    """Raise a one-line ``ModelError`` naming the first tensor, shape or token on which the models differ.

    ``ignore_vocab_rows``: the row counts of token-indexed tensors (``vocab_parameters``) and the tokenizers
    may differ, as they may before ``evosuite.vocab_alignment`` gives every model the carrier's vocabulary.
    """
    names = list(models)
    if len(names) < 2:
        return
    first = names[0]
    reference = models[first].mergeable_parameters()
    ref_vocab = _vocab(models[first])
    for other in names[1:]:
        params = models[other].mergeable_parameters()
        for tensor_name in sorted(set(reference) ^ set(params)):
            owner, missing = (first, other) if tensor_name in reference else (other, first)
            families = _families(models, first, other)
            raise ModelError(f"tensor {tensor_name!r} is in {owner!r} but not in {missing!r}{families}",
                             "merge models of the same architecture")
        rows_may_differ = set(models[other].vocab_parameters()) if ignore_vocab_rows else set()
        for tensor_name, tensor in reference.items():
            shape, other_shape = tuple(tensor.shape), tuple(params[tensor_name].shape)
            if tensor_name in rows_may_differ:
                shape, other_shape = shape[1:], other_shape[1:]
            if shape != other_shape:
                raise ModelError(
                    f"tensor {tensor_name!r} has shape {tuple(tensor.shape)} in {first!r} "
                    f"but {tuple(params[tensor_name].shape)} in {other!r}{_families(models, first, other)}",
                    "merge models of the same architecture and size",
                )
        vocab = _vocab(models[other])
        if not ignore_vocab_rows and ref_vocab is not None and vocab is not None and vocab != ref_vocab:
            token = next(iter(sorted(set(ref_vocab.items()) ^ set(vocab.items()))))
            raise ModelError(f"the tokenizers of {first!r} and {other!r} differ (token {token[0]!r})",
                             "merge models that share one tokenizer")


def _families(models: Mapping[str, LoadedModel], a: str, b: str) -> str:
    """``: 'a' is a qwen2 model, 'b' a mistral model`` when the two families differ, else nothing."""
    family_a = models[a].config_summary().get("model_type")
    family_b = models[b].config_summary().get("model_type")
    if family_a and family_b and family_a != family_b:
        return f": {a!r} is a {family_a} model, {b!r} a {family_b} model"
    return ""


def config_differences(models: Mapping[str, LoadedModel], carrier: str) -> list[str]:
    """One line per configuration value (``LoadedModel.config_summary``) on which the models differ, with the
    value the result keeps: the carrier's, since the merged weights are written into a copy of it."""
    summaries = {name: model.config_summary() for name, model in models.items()}
    keys = [k for k in summaries[carrier] if any(k in s for s in summaries.values())]
    lines = []
    for key in keys:
        values = {name: summary.get(key) for name, summary in summaries.items()}
        if len({repr(v) for v in values.values()}) > 1:
            listed = ", ".join(f"{name} {value}" for name, value in values.items())
            lines.append(f"config: {key} differs ({listed}); the result keeps {carrier}'s {values[carrier]}")
    return lines


def _vocab(model: LoadedModel):
    tokenizer = model.tokenizer
    return tokenizer.get_vocab() if tokenizer is not None and hasattr(tokenizer, "get_vocab") else None
