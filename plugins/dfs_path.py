"""Running a data-flow path of decoder layers in place, and saving and loading such a path.

A *path* is a sequence of decoder layers (taken from one or more loaded models of one family and hidden
size) with a scale per position: the hidden state entering position p is multiplied by ``scales[p]``
before the layer runs. ``PathLayer`` wraps one position: it holds the source's own layer module (no weight
copy; the same module may sit at several positions), multiplies its input by the scale (skipped when the
scale is exactly 1, so a path of one model's layers with scales 1 computes exactly what that model computes)
and calls the layer with the attention's ``layer_idx`` set to the position. ``transformers`` indexes its
KV cache by ``layer_idx``, so a layer repeated in the path, or two sources' layers with the same index,
each get their own cache entry; the original ``layer_idx`` is put back after every call, so the source
models stay usable on their own.

``PathModel`` is the ``LoadedModel`` of such a module (the adapter's own class with a mixin): canonical
parameter names are those of the equivalent standard model (``layers.{position}.*``), and ``save`` writes
that standard model (each position's layer copied, ``num_hidden_layers`` = path length) plus, when a scale
is not 1, ``evosuite_dfs.json`` with the per-position scales. ``apply_saved_path`` re-applies that file
to a model loaded by the normal adapters (``evosuite.models.load_model`` calls it through the ``dfs``
space's ``post_load``), wrapping its layers with the same ``PathLayer``, so the loaded model reproduces
the saved candidate exactly.

torch is imported at module level: this module is only imported when a DFS space or a DFS model is used.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from evosuite.errors import ModelError
from evosuite.plugins.hf_models import HFModel, text_layout

#: Written next to the weights when a path's scales are not all 1.
DFS_FILE = "evosuite_dfs.json"
DFS_FORMAT = "evosuite-dfs"
DFS_VERSION = 1


class PathLayer(nn.Module):
    """One position of a path: ``layer(hidden_states * scale)`` run as layer number ``slot``."""

    def __init__(self, layer: nn.Module, slot: int, scale: float = 1.0):
        super().__init__()
        while isinstance(layer, PathLayer):  # a source that is itself a path (a loaded DFS model)
            scale, layer = scale * layer.scale, layer.layer
        self.layer = layer
        self.slot = int(slot)
        self.scale = float(scale)
        # Every submodule that carries a cache index (the attention; a few families keep one on the layer).
        self._indexed = [m for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]

    def forward(self, *args, **kwargs):
        if self.scale != 1.0:  # the hidden state is the first argument, or passed by name
            if args:
                args = (args[0] * self.scale, *args[1:])
            else:
                kwargs["hidden_states"] = kwargs["hidden_states"] * self.scale
        dicts = [m.__dict__ for m in self._indexed]
        saved = [d["layer_idx"] for d in dicts]
        for d in dicts:
            d["layer_idx"] = self.slot
        try:
            return self.layer(*args, **kwargs)
        finally:
            for d, old in zip(dicts, saved):
                d["layer_idx"] = old

    def __getattr__(self, name: str):
        # Code that reads an attribute of a decoder layer (attention_type, self_attn...) finds the wrapped one.
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name.startswith("_") or not modules or "layer" not in modules:
                raise
            return getattr(modules["layer"], name)

    def extra_repr(self) -> str:
        return f"slot={self.slot}, scale={self.scale:g}"


# -- where things sit in a loaded model ------------------------------------------------------------------
def layer_container_name(model: HFModel) -> str:
    """Dotted name, relative to the decoder, of the ModuleList of layers (``layers``)."""
    return text_layout(model.text_config.model_type)["layer"].split("{i}")[0].rstrip(".")


def decoder_of(module: nn.Module, model: HFModel) -> nn.Module:
    return module.get_submodule(model._prefix.rstrip("."))


def layers_of(model: HFModel, module: nn.Module | None = None) -> nn.ModuleList:
    module = model.module if module is None else module
    return decoder_of(module, model).get_submodule(layer_container_name(model))


def _set_layers(model: HFModel, module: nn.Module, layers: nn.ModuleList) -> None:
    parent_name, _, leaf = layer_container_name(model).rpartition(".")
    decoder = decoder_of(module, model)
    parent = decoder.get_submodule(parent_name) if parent_name else decoder
    setattr(parent, leaf, layers)


def text_configs(module: nn.Module, model: HFModel) -> list[Any]:
    """The distinct config objects that describe the decoder (the wrapper's text config, the decoder's own)."""
    found = []
    for config in (module.config.get_text_config(decoder=True), decoder_of(module, model).config):
        if all(config is not seen for seen in found):
            found.append(config)
    return found


def share_structure(module: nn.Module) -> nn.Module:
    """A new module tree with the same parameters and buffers (shared, not copied) and its own configs."""
    memo = {id(t): t for t in list(module.parameters()) + list(module.buffers())}
    return copy.deepcopy(module, memo)


def block_output_capture(module: nn.Module, model: HFModel) -> None:
    """Keep transformers from installing its output-capture hooks on the (shared) layers of a path.

    ``capture_outputs`` hooks every decoder-layer module it reaches, once per place it reaches it, and never
    removes the hooks: on an in-place path that would record a repeated layer twice and leave hooks on
    the sources' own modules. Marking the models that contain the decoder as already hooked prevents it;
    the vision tower, a model of its own, still captures what LLaVA asks of it.
    """
    from transformers import PreTrainedModel

    parts = model._prefix.rstrip(".").split(".")
    for depth in range(len(parts) + 1):
        owner = module.get_submodule(".".join(parts[:depth]))
        if isinstance(owner, PreTrainedModel):
            owner._output_capturing_hooks_installed = True


def replace_part(target: nn.Module, source: nn.Module, name: str) -> None:
    """Make ``target.<name>`` the very module ``source.<name>`` (shared)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = target.get_submodule(parent_name) if parent_name else target
    setattr(parent, leaf, source.get_submodule(name))


# -- PathModel: the LoadedModel of a module whose decoder runs a path ----------------------------------
class PathModelMixin:
    """Mixed in before an adapter's ``HFModel`` class; see the module docstring."""

    #: Per position: {"source", "layer", "scale"} (source and layer describe where the layer came from).
    path: list[dict[str, Any]]

    def path_layers(self) -> nn.ModuleList:
        return layers_of(self)

    @property
    def scales(self) -> list[float]:
        return [w.scale for w in self.path_layers()]

    def mergeable_parameters(self) -> dict[str, torch.Tensor]:
        layout = text_layout(self.text_config.model_type)
        container = self._prefix + layer_container_name(self) + "."
        out = {}
        for name, param in self.module.named_parameters():
            if name.startswith(container):
                continue
            if name.startswith(self._prefix):
                out[name[len(self._prefix):]] = param.data
            elif name.startswith(self._head):
                out[name] = param.data
        for slot, wrapper in enumerate(self.path_layers()):
            for name, param in wrapper.layer.named_parameters():
                out[layout["layer"].format(i=slot) + name] = param.data
        return out

    def save(self, out_dir, *, model_card: str | None = None) -> Path:
        """The path as a standard model directory (+ ``evosuite_dfs.json`` when a scale is not 1)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        wrappers = self.path_layers()
        # The layers as a plain list for save_pretrained: a layer's first position saves the module itself,
        # a repeat saves a copy (shared tensors under two names would be taken for tied weights and dropped).
        # A loaded model gets fresh layers from the config, so their layer_idx needs no care here.
        standalone, seen = nn.ModuleList(), set()
        for wrapper in wrappers:
            layer = wrapper.layer
            standalone.append(copy.deepcopy(layer) if id(layer) in seen else layer)
            seen.add(id(layer))
        _set_layers(self, self.module, standalone)
        try:
            self.module.save_pretrained(out)
        finally:
            _set_layers(self, self.module, wrappers)
        (self.processor or self.tokenizer).save_pretrained(out)
        scales = [w.scale for w in wrappers]
        record = out / DFS_FILE
        if any(s != 1.0 for s in scales):
            record.write_text(json.dumps({"format": DFS_FORMAT, "version": DFS_VERSION, "scales": scales,
                                          "path": self.path}, indent=1) + "\n", encoding="utf-8")
        elif record.exists():
            record.unlink()
        if model_card is not None:
            (out / "README.md").write_text(model_card, encoding="utf-8")
        return out


_CLASSES: dict[type, type] = {}


def path_model_class(base: type) -> type:
    if issubclass(base, PathModelMixin):
        return base
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Path{base.__name__}", (PathModelMixin, base), {"__module__": __name__})
    return _CLASSES[base]


def as_path_model(like: HFModel, module: nn.Module) -> HFModel:
    """A ``PathModel`` of ``module`` that otherwise behaves like ``like`` (adapter, tokenizer, processor)."""
    model = copy.copy(like)
    model.__class__ = path_model_class(type(like))
    model.module = module
    model.text_config = module.config.get_text_config(decoder=True)
    model.path = []
    return model


def install_path(model: HFModel, layers: Sequence[nn.Module], scales: Sequence[float],
                 layer_types: Sequence[str] | None, path: list[dict[str, Any]]) -> None:
    """Make ``model``'s decoder run ``layers`` (shared modules) with ``scales``; only the ModuleList is rebuilt."""
    wrappers = nn.ModuleList(PathLayer(layer, slot, scale) for slot, (layer, scale) in enumerate(zip(layers, scales)))
    _set_layers(model, model.module, wrappers)
    for config in text_configs(model.module, model):
        config.num_hidden_layers = len(wrappers)
        if layer_types is not None and getattr(config, "layer_types", None) is not None:
            config.layer_types = list(layer_types)
    model.path = path


# -- loading a saved path -----------------------------------------------------------------------------------
def _find_record(name_or_path: str) -> Path | None:
    local = Path(name_or_path)
    if local.is_dir():
        record = local / DFS_FILE
        return record if record.is_file() else None
    try:  # a hub id: the record is one more small file of the repository
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(name_or_path), DFS_FILE))
    except Exception:
        return None


def read_record(name_or_path: str) -> dict[str, Any] | None:
    """The saved ``evosuite_dfs.json`` of a model directory or hub id, or None when it has none."""
    record = _find_record(name_or_path)
    if record is None:
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {record}: {exc}", "re-export the DFS model") from None
    if data.get("format") != DFS_FORMAT or not isinstance(data.get("scales"), list):
        raise ModelError(f"{record} is not an evosuite DFS record", f"expected format {DFS_FORMAT!r} with 'scales'")
    if int(data.get("version", 0)) > DFS_VERSION:
        raise ModelError(f"{record} has version {data['version']}, newer than this evosuite reads ({DFS_VERSION})",
                         "upgrade evosuite")
    return data


def apply_saved_path(model, name_or_path: str):
    """Re-apply the saved per-layer scales to a model the adapters loaded; None when there is nothing to do."""
    if isinstance(model, PathModelMixin) or not isinstance(model, HFModel):
        return None
    data = read_record(name_or_path)
    if data is None:
        return None
    scales = [float(s) for s in data["scales"]]
    layers = list(layers_of(model))
    if len(scales) != len(layers):
        raise ModelError(f"{DFS_FILE} of {name_or_path!r} has {len(scales)} scales for {len(layers)} layers",
                         "the directory was edited after export: re-export it")
    loaded = as_path_model(model, model.module)
    install_path(loaded, layers, scales, None, list(data.get("path") or []))
    return loaded
