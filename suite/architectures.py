"""Which weights form layer i of a model: the table ``architectures.json`` and its reader.

``resolve(config, names)`` gives a model's ``Layout``: its modules (stacks of layers, such as a text
decoder and a vision tower), each with the prefix its parameters use in ``names``, its layer template and
its layer count, so that every reader (the merge engine's gradient positions and slices, the adapters'
layer groups and data-flow paths) asks the same table. A ``model_type`` missing from the table is inferred
from the names as mergekit does: each distinct prefix before the first ``.N.`` is a module. A model whose
layers cannot be found is refused with one line, never merged as if it had none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Mapping

from evosuite.errors import ConfigError

#: Where the table lives (inside the installed package).
TABLE = "architectures.json"
#: Config keys that hold a layer count, tried for a family the table does not know.
COUNT_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
_FIRST_INDEX = re.compile(r"\.(\d+)\.")


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    return json.loads(resources.files("evosuite").joinpath(TABLE).read_text(encoding="utf-8"))


def families(kind: str | None = None, *, run: bool | None = None) -> list[str]:
    """The model types of the table, optionally only those of one ``kind`` or that ``evosuite run`` accepts."""
    return [name for name, fam in table()["families"].items()
            if (kind is None or fam["kind"] == kind) and (run is None or bool(fam.get("run")) == run)]


def relative_layout(model_type: str) -> dict[str, Any]:
    """The single module of a plain family, relative to its prefix: ``layers``, ``embeddings``, ``final_norm``."""
    fam = table()["families"].get(model_type)
    if fam is None or len(fam["modules"]) != 1:
        raise ConfigError(f"model type {model_type!r} is not a single-stack family of the architecture table",
                          f"declare it in evosuite/{TABLE}; known: {', '.join(sorted(table()['families']))}")
    return next(iter(fam["modules"].values()))


@dataclass(frozen=True)
class Module:
    """One stack of layers as named in one model: layer i is ``prefix + layers.format(i=i)``."""

    name: str
    prefix: str
    layers: str
    num_layers: int
    #: Dotted config.json path of the layer count (None: counted from the names).
    count_key: str | None
    embeddings: tuple[str, ...] = ()
    final_norm: tuple[str, ...] = ()

    @property
    def template(self) -> str:
        return self.prefix + self.layers

    @property
    def container(self) -> str:
        """Dotted name of the ModuleList of layers (``model.layers``, ``transformer.h``)."""
        return self.template.split("{i}")[0].rstrip(".")

    @property
    def _pattern(self) -> re.Pattern:
        head, tail = self.template.split("{i}")
        return re.compile("^" + re.escape(head) + r"(\d+)" + re.escape(tail))

    def layer_of(self, name: str) -> int | None:
        match = self._pattern.match(name)
        return int(match.group(1)) if match else None

    def renumber(self, name: str, layer: int) -> str:
        """``name`` (a tensor of one of this module's layers) moved to layer ``layer``."""
        match = self._pattern.match(name)
        return name[:match.start(1)] + str(layer) + name[match.end(1):]

    def t(self, layer: int) -> float:
        """The gradient position of a layer: idx / (num_layers - 1), 1 for a single layer (mergekit's rule)."""
        return layer / (self.num_layers - 1) if self.num_layers > 1 else 1.0


@dataclass(frozen=True)
class Layout:
    """The modules of one model, and its head."""

    family: str
    modules: tuple[Module, ...]
    head: tuple[str, ...] = ()
    #: True when the family was not in the table and its modules were inferred from the names.
    inferred: bool = False

    def module(self, name: str) -> Module:
        return next(m for m in self.modules if m.name == name)

    def locate(self, name: str) -> tuple[Module | None, int | None]:
        """The module and layer index of a tensor, or (None, None) outside every layer."""
        for module in self.modules:
            layer = module.layer_of(name)
            if layer is not None:
                return module, layer
        return None, None

    def in_layer(self, name: str) -> bool:
        return self.locate(name)[0] is not None

    def is_embedding(self, name: str) -> bool:
        """A tensor of a module's embeddings (the weights a merge puts first, from the first slice)."""
        return any(name.startswith(m.prefix + e) for m in self.modules for e in m.embeddings)

    def describe(self) -> str:
        return "; ".join(f"{m.name}: {m.template} x {m.num_layers}" for m in self.modules)


def _lookup(config: Mapping[str, Any], path: str | None) -> Any:
    value: Any = config
    for part in (path or "").split(".") if path else []:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _as_list(value: Any) -> list[str]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _count(names: set[str], template: str) -> int:
    head, tail = template.split("{i}")
    pattern = re.compile("^" + re.escape(head) + r"(\d+)" + re.escape(tail))
    found = [int(m.group(1)) for n in names if (m := pattern.match(n))]
    return max(found) + 1 if found else 0


def _module(name: str, spec: Mapping[str, Any], config: Mapping[str, Any], names: set[str], family: str,
            outer: list[str], config_path: str) -> Module:
    """One module of a table entry, its prefix chosen as the first candidate under which layer 0 exists."""
    if "config" in spec:
        config_path = ".".join(p for p in (config_path, spec["config"]) if p)
    if "layers" not in spec:  # the layout of the sub-config's own family, under this prefix
        inner_type = _lookup(config, config_path + ".model_type") if config_path else None
        inner = table()["families"].get(inner_type) if isinstance(inner_type, str) else None
        if inner is None or len(inner["modules"]) != 1:
            raise ConfigError(f"model family {family!r}: its {spec['config']} has model type {inner_type!r}, which "
                              f"the architecture table does not know",
                              f"declare {inner_type!r} in evosuite/{TABLE}")
        prefixes = [o + p for o in outer for p in _as_list(spec["prefix"])]
        return _module(name, next(iter(inner["modules"].values())), config, names, family, prefixes, config_path)
    prefixes = [o + p for o in outer for p in _as_list(spec["prefix"])]
    candidates = [p + layers for p in prefixes for layers in _as_list(spec["layers"])]
    found = next((c for c in candidates if any(n.startswith(c.format(i=0)) for n in names)), None)
    if found is None:
        raise ConfigError(f"model family {family!r}: no tensor is named like its {name} layers "
                          f"({candidates[0].format(i=0)}...)",
                          f"check the model's config.json model_type, or fix its entry in evosuite/{TABLE}")
    prefix = next(p for p in prefixes if found.startswith(p) and found[len(p):] in _as_list(spec["layers"]))
    count_key = spec.get("num_layers")
    count_path = ".".join(p for p in (config_path, count_key) if p) if count_key else None
    counted = _count(names, found)
    configured = _lookup(config, count_path) if count_path else None
    num_layers = int(configured) if isinstance(configured, int) and configured > 0 else counted
    if counted < num_layers:  # transformers would fill the missing layers with random weights
        raise ConfigError(f"model family {family!r}: config.json says {num_layers} {name} layers ({count_path}) but "
                          f"the tensors hold only {counted}",
                          "re-save the model, or fix the layer count in its config.json")
    return Module(name, prefix, found[len(prefix):], num_layers, count_path if configured else None,
                  tuple(spec.get("embeddings", ())), tuple(spec.get("final_norm", ())))


def resolve(config: Mapping[str, Any], names: Iterable[str], *, model: str = "the model",
            only: Iterable[str] | None = None) -> Layout:
    """The layout of a model from its config.json (a mapping) and its parameter or tensor names (``only``:
    just these modules of a family in the table, e.g. ``["text"]`` for a reader that never looks elsewhere)."""
    names = set(names)
    family = config.get("model_type") if isinstance(config.get("model_type"), str) else None
    entry = table()["families"].get(family) if family else None
    if entry is None:
        return _infer(config, names, family, model)
    wanted = set(entry["modules"]) if only is None else set(only)
    modules = tuple(_module(name, spec, config, names, family, [""], "") for name, spec in entry["modules"].items()
                    if name in wanted)
    head = tuple(h for h in entry["head"] if any(n.startswith(h) for n in names)) or tuple(entry["head"][:1])
    return Layout(family, modules, head)


def _infer(config: Mapping[str, Any], names: set[str], family: str | None, model: str) -> Layout:
    """mergekit's inference: each distinct prefix before a tensor's first ``.N.`` is a module of layers."""
    counts: dict[str, int] = {}
    for name in sorted(names):
        match = _FIRST_INDEX.search(name)
        if match:
            prefix = name[:match.start() + 1]
            counts[prefix] = max(counts.get(prefix, 0), int(match.group(1)) + 1)
    if not counts:
        raise ConfigError(f"cannot find the layers of {model} (model type {family!r}): the architecture table does "
                          "not know it and no tensor name has a layer number",
                          f"declare its layer names in evosuite/{TABLE}")
    modules = []
    for i, (prefix, count) in enumerate(sorted(counts.items())):
        key = next((k for k in COUNT_KEYS if config.get(k) == count), None) if len(counts) == 1 else None
        modules.append(Module(f"module{i}" if len(counts) > 1 else "text", prefix, "{i}.", count, key))
    return Layout(family or "unknown", tuple(modules), inferred=True)
