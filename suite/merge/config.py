"""mergekit's YAML merge config, read and validated into dataclasses.

A config names ``merge_method``, the ``models`` (or output ``slices`` of layer ranges, for
frankenmerges), an optional ``base_model``, global ``parameters``, ``dtype``, and the output vocabulary
(``tokenizer_source`` or a ``tokenizer:`` block, parsed into a ``TokenizerSpec`` by
``evosuite.merge.tokenizer_spec``). The forms of parameter values, their checks and their per-tensor
resolution are in ``evosuite.merge.parameters``.

As mergekit 0.1.5, a parameter the method does not use (a ``weight`` on ``slerp``, a ``t`` per model) is
ignored; ``load_config`` lists it in ``MergeConfig.warnings`` (an error with ``strict=True``). A name no
registered method uses (``lamda``) is refused as a typo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from evosuite.api import REQUIRED, MergeMethod
from evosuite.errors import ConfigError, EvosuiteError
from evosuite.merge.parameters import MATCH_ALL, _check_params, _Unused, evaluate, resolve_parameters
from evosuite.merge.tokenizer_spec import TokenizerSpec, TokenRow, _tokenizer_spec

#: The names this module held before it was split (``from evosuite.merge.config import ...`` keeps working).
__all__ = ["CHAT_TEMPLATE_NAMES", "DEFAULT_MODULE", "DTYPES", "MATCH_ALL", "RUN_RECORD_KEYS", "TOP_LEVEL_KEYS",
           "MergeConfig", "ModelEntry", "SliceSpec", "TokenRow", "TokenizerSpec", "evaluate", "load_config",
           "resolve_parameters"]

TOP_LEVEL_KEYS = ("base_model", "chat_template", "dtype", "merge_method", "models", "modules", "name", "out_dtype",
                  "parameters", "seed", "slices", "tokenizer", "tokenizer_source")
#: The one module name ``modules:`` may use: mergekit's name for the module of a single-module model.
DEFAULT_MODULE = "default"
#: mergekit's bundled chat templates, by name (refused: evosuite does not ship their text).
CHAT_TEMPLATE_NAMES = ("alpaca", "chatml", "exaone", "llama3", "mistral")
#: The run's own record beside the recipe in a run's ``best_recipe.yaml``: read by the report, not the merge.
RUN_RECORD_KEYS = ("fitness", "genome", "recipe", "stages")
DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


@dataclass
class ModelEntry:
    """One model of ``models`` or one source of a slice."""

    model: str
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Source layers [start, end) for slices; None for the whole model.
    layer_range: tuple[int, int] | None = None


@dataclass
class SliceSpec:
    """One output slice: its sources (same number of layers each) and its own parameters."""

    sources: list[ModelEntry]
    parameters: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None

    @property
    def num_layers(self) -> int:
        start, end = self.sources[0].layer_range
        return end - start


@dataclass
class MergeConfig:
    merge_method: str
    method: MergeMethod
    models: list[ModelEntry]
    base_model: str | None
    parameters: dict[str, Any]
    slices: list[SliceSpec] | None
    dtype: str | None
    tokenizer_source: str | None
    #: The YAML as given (for the model card).
    raw: dict[str, Any]
    #: ``tokenizer_source`` or the ``tokenizer:`` block; None merges embeddings by index.
    tokenizer: TokenizerSpec | None = None
    #: The recipe's ``dtype``: what mergekit computes in (None: the checkpoints' promoted dtype).
    compute_dtype: str | None = None
    #: ``chat_template``: a built-in name, "auto" or a Jinja template; None keeps the tokenizer's.
    chat_template: str | None = None
    #: Parameters the method does not use (ignored, as mergekit ignores them), one line each.
    warnings: list[str] = field(default_factory=list)
    #: ``seed``: seeds random methods (DARE, DELLA) per tensor; evosuite's key (a run's best_recipe.yaml has it).
    seed: int | None = None

    def referenced_models(self) -> list[str]:
        """Every model the config names, the base first, then in the config's order."""
        refs = [self.base_model] if self.base_model else []
        refs += [e.model for e in self.models]
        for spec in self.slices or []:
            refs += ([spec.base_model] if spec.base_model else []) + [s.model for s in spec.sources]
        return list(dict.fromkeys(refs))

    def non_base(self, entries: Sequence[ModelEntry], base: str | None) -> list[ModelEntry]:
        """The entries the method merges: without the base model when the method takes one apart."""
        if self.method.takes_base:
            return [e for e in entries if e.model != base]
        return list(entries)


def _model_entry(item: Any, where: str, valid: Mapping[str, Any], method: str, unused: _Unused, *,
                 slice_source: bool) -> ModelEntry:
    if isinstance(item, str):  # mergekit refuses a bare path here too
        raise ConfigError(f"{where} is a plain string ({item!r}); a model entry is a mapping",
                          f"write `- model: {item}`")
    if not isinstance(item, dict) or not isinstance(item.get("model"), str):
        raise ConfigError(f"{where} must be a mapping with a `model` path", "write `- model: PATH`")
    allowed = {"model", "parameters"} | ({"layer_range"} if slice_source else set())
    extra = sorted(set(item) - allowed)
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in {where}", f"valid keys: {', '.join(sorted(allowed))}")
    params = _check_params(item.get("parameters"), valid, f"{where} ({item['model']})", method, unused)
    layer_range = None
    if slice_source:
        lr = item.get("layer_range")
        if not (isinstance(lr, list) and len(lr) == 2 and all(isinstance(v, int) for v in lr) and 0 <= lr[0] < lr[1]):
            raise ConfigError(f"{where} ({item['model']}) needs `layer_range: [start, end]` with start < end",
                              "give the source layers as two integers, end excluded")
        layer_range = (lr[0], lr[1])
    return ModelEntry(item["model"], params, layer_range)


def _lookup_method(name: str) -> MergeMethod:
    from evosuite import plugin_manager

    try:
        return plugin_manager.get("methods", name)
    except EvosuiteError as exc:
        raise ConfigError(f"unknown merge method {name!r}", exc.fix) from None


def _read_raw(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"merge config {path} is not UTF-8 text", "save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read merge config {path}: {exc.strerror or exc}",
                          "check the path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"merge config {path} is not valid YAML: {str(exc).splitlines()[0]}",
                          "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"merge config {path} is not a mapping", "see mergekit's config format")
    return raw


def _single_module(raw: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """``modules: {default: {models|slices, parameters}}`` as the top-level form it equals, and the module's
    parameters (a scope between the slice's and the global ones). Other module names need mergekit's
    per-architecture module table (a VLM's text_decoder, vision_tower...), which evosuite does not have."""
    modules = raw["modules"]
    fix = "write the module's `models:` or `slices:` at the top level, or as `modules: {default: {models: [...]}}`"
    if not isinstance(modules, dict) or not modules:
        raise ConfigError("`modules` must be a mapping of module name to {models or slices}", fix)
    names = sorted(modules)
    if names != [DEFAULT_MODULE]:
        raise ConfigError(f"`modules:` with module(s) {', '.join(map(repr, names))} is not supported: evosuite "
                          f"merges only a single-module model's `{DEFAULT_MODULE}` module", fix)
    if raw.get("models") or raw.get("slices"):
        raise ConfigError("the merge config gives `modules` and also `models` or `slices`",
                          "keep one of them (mergekit needs exactly one)")
    module = modules[DEFAULT_MODULE]
    if not isinstance(module, dict):
        raise ConfigError(f"`modules.{DEFAULT_MODULE}` must be a mapping", fix)
    extra = sorted(set(module) - {"models", "slices", "parameters"})
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in `modules.{DEFAULT_MODULE}`",
                          "valid keys: models, parameters, slices")
    flat = {k: v for k, v in raw.items() if k != "modules"}
    flat.update({k: module[k] for k in ("models", "slices") if k in module})
    return flat, module.get("parameters")


def _chat_template(value: Any) -> str | None:
    """mergekit's rule: "auto" (the models' most common template) or a Jinja template (20+ characters with
    a ``{``). mergekit's built-in names need its bundled template files, which evosuite does not ship."""
    if value is None:
        return None
    fix = "give `auto` (the models' most common template) or the Jinja template itself"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"`chat_template: {value!r}` is not a chat template", fix)
    if value in CHAT_TEMPLATE_NAMES:
        raise ConfigError(f"`chat_template: {value}` names one of mergekit's bundled templates, which evosuite "
                          "does not ship", fix)
    if value == "auto" or (len(value) >= 20 and "{" in value):
        return value
    raise ConfigError(f"`chat_template: {value!r}` is neither `auto` nor a Jinja template", fix)


def _dtype(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    name = value[len("torch."):] if isinstance(value, str) and value.startswith("torch.") else value
    if not isinstance(name, str) or name not in DTYPES:
        raise ConfigError(f"unknown {key} {value!r}", f"valid dtypes: {', '.join(sorted(set(DTYPES.values())))}")
    return DTYPES[name]


def load_config(source: str | Path | Mapping[str, Any], *, strict: bool = False) -> MergeConfig:
    """Read and validate a mergekit YAML config (a path, or the already parsed mapping).

    Parameters the method does not use are ignored with a line in ``MergeConfig.warnings``, or refused with
    ``strict``.
    """
    raw = _read_raw(source)
    if "merge_method" not in raw and "no_mergekit_recipe" in raw:
        raise ConfigError(f"this run's best_recipe.yaml holds no merge recipe: {raw['no_mergekit_recipe']}",
                          "use the model the run exported (its model/ directory)")
    extra = sorted(set(raw) - set(TOP_LEVEL_KEYS) - set(RUN_RECORD_KEYS))
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in the merge config", f"valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    recipe, module_params = _single_module(raw) if "modules" in raw else (raw, None)
    name = raw.get("merge_method")
    if not isinstance(name, str):
        raise ConfigError("the merge config has no `merge_method`", "add e.g. `merge_method: ties`")
    method = _lookup_method(name)
    unused = _Unused(strict)
    model_valid = dict(method.model_parameters)
    global_valid = {**method.global_parameters, **model_valid}

    has_models, has_slices = bool(recipe.get("models")), bool(recipe.get("slices"))
    if has_models == has_slices:
        raise ConfigError("the merge config must give either `models` or `slices`, not both or neither",
                          "list the models to merge under `models`, or layer ranges under `slices`")
    base = raw.get("base_model")
    if base is not None and not isinstance(base, str):
        raise ConfigError("`base_model` must be a model path", "write `base_model: PATH`")
    parameters = _check_params(raw.get("parameters"), global_valid, "global parameters", name, unused)
    if module_params is not None:  # the module's scope sits between the slices' and the global one
        parameters = {**parameters, **_check_params(module_params, global_valid, f"`modules.{DEFAULT_MODULE}` "
                                                    "parameters", name, unused)}

    models: list[ModelEntry] = []
    slices: list[SliceSpec] | None = None
    if has_models:
        if not isinstance(recipe["models"], list):
            raise ConfigError("`models` must be a list", "write `models:` then `- model: PATH` items")
        models = [_model_entry(m, f"models[{i}]", model_valid, name, unused, slice_source=False)
                  for i, m in enumerate(recipe["models"])]
        groups = [(models, parameters, base, "models")]
    else:
        if not isinstance(recipe["slices"], list):
            raise ConfigError("`slices` must be a list", "write `slices:` then `- sources: [...]` items")
        slices = []
        for i, item in enumerate(recipe["slices"]):
            where = f"slices[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("sources"), list) or not item["sources"]:
                raise ConfigError(f"{where} needs a non-empty `sources` list",
                                  "write `- sources: [{model, layer_range}]`")
            extra = sorted(set(item) - {"sources", "parameters", "base_model", "residual_weight"})
            if extra:
                raise ConfigError(f"unknown key {extra[0]!r} in {where}",
                                  "valid keys: base_model, parameters, residual_weight, sources")
            if "residual_weight" in item:
                unused(f"no merge method uses `residual_weight` ({where})", "remove it")
            sources = [_model_entry(s, f"{where}.sources[{j}]", model_valid, name, unused, slice_source=True)
                       for j, s in enumerate(item["sources"])]
            lengths = {s.layer_range[1] - s.layer_range[0] for s in sources}
            if len(lengths) > 1:
                raise ConfigError(f"the sources of {where} have different numbers of layers {sorted(lengths)}",
                                  "give every source of a slice a layer range of the same length")
            slice_params = _check_params(item.get("parameters"), global_valid, f"{where} parameters", name, unused)
            slices.append(SliceSpec(sources, slice_params, item.get("base_model", base)))
        groups = [(s.sources, {**parameters, **s.parameters}, s.base_model, f"slice {i}")
                  for i, s in enumerate(slices)]

    for entries, scope, slice_base, where in groups:
        if method.requires_base and not slice_base:
            raise ConfigError(f"merge method {name!r} needs a `base_model`", "add `base_model: PATH` to the config")
        config = MergeConfig(name, method, models, base, parameters, slices, None, None, raw)
        merged = config.non_base(entries, slice_base)
        check = getattr(method, "check_sources", None)
        if check is not None:
            check(len(merged))
        elif not merged:
            raise ConfigError(f"merge method {name!r} has no model to merge in {where}", "list the models")
        for entry in merged:
            for pname, default in model_valid.items():
                if default is REQUIRED and pname not in entry.parameters and pname not in scope:
                    raise ConfigError(f"model {entry.model!r} has no `{pname}` for merge method {name!r}",
                                      f"add `{pname}` under its parameters (or globally)")
        for pname, default in method.global_parameters.items():
            if default is REQUIRED and pname not in scope:
                raise ConfigError(f"merge method {name!r} needs the global parameter `{pname}`",
                                  f"add `parameters: {{{pname}: ...}}`")

    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"`seed: {seed!r}` is not an integer", "write e.g. `seed: 0`, or leave it out")
    compute = _dtype(raw, "dtype")
    result = MergeConfig(name, method, models, base, parameters, slices, _dtype(raw, "out_dtype") or compute,
                         raw.get("tokenizer_source"), raw, compute_dtype=compute, seed=seed)
    result.tokenizer = _tokenizer_spec(raw, result.referenced_models())
    result.chat_template = _chat_template(raw.get("chat_template"))
    result.warnings = unused.lines
    return result

