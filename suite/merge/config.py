"""mergekit's YAML merge config, validated into dataclasses, and per-tensor parameter resolution.

A config names ``merge_method``, the ``models`` (or output ``slices`` of layer ranges, for
frankenmerges), an optional ``base_model``, global ``parameters``, ``dtype``, and the output vocabulary
(``tokenizer_source`` or a ``tokenizer:`` block, parsed into a ``TokenizerSpec``).
A parameter value is a scalar, a list of numbers (a gradient interpolated over the layers at
t = idx / (num_layers - 1), each module's layers by their own count, 0 outside the layers, as
``evosuite.architectures`` finds them), a list of booleans or strings (the item at int(t * (len - 1)), no
interpolation), or a list of ``{filter: SUBSTRING, value: ...}`` items where the first item whose filter
occurs in the tensor name (or is ``"*"``, or is absent) gives the value. A model's parameter is looked up
in its own ``parameters``, then its slice's, then its module's, then the global ones.

As mergekit 0.1.5, a parameter the method does not use (a ``weight`` on ``slerp``, a ``t`` per model) is
ignored; ``load_config`` lists it in ``MergeConfig.warnings`` (an error with ``strict=True``). A name no
registered method uses (``lamda``) is refused as a typo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from evosuite.api import REQUIRED, MergeMethod
from evosuite.errors import ConfigError, EvosuiteError

TOP_LEVEL_KEYS = ("base_model", "chat_template", "dtype", "merge_method", "models", "modules", "name", "out_dtype",
                  "parameters", "seed", "slices", "tokenizer", "tokenizer_source")
#: mergekit's match-all filter (any other filter is a plain substring: no wildcards).
MATCH_ALL = "*"
#: The one module name ``modules:`` may use: mergekit's name for the module of a single-module model.
DEFAULT_MODULE = "default"
#: mergekit's bundled chat templates, by name (refused: evosuite does not ship their text).
CHAT_TEMPLATE_NAMES = ("alpaca", "chatml", "exaone", "llama3", "mistral")
#: The run's own record beside the recipe in a run's ``best_recipe.yaml``: read by the report, not the merge.
RUN_RECORD_KEYS = ("fitness", "genome", "recipe", "stages")
DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "float16": "float16", "fp16": "float16",
          "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}

_MISSING = object()


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


@dataclass(frozen=True)
class TokenRow:
    """A ``tokenizer: tokens:`` entry: where token's default row comes from, and whether it replaces the
    rows of the models that have the token (``force``). ``kind``: "model" (that model's row for the same
    token), "model_token" (that model's row for ``token`` or ``token_id``) or "zero"."""

    kind: str
    model: str | None = None
    token: str | None = None
    token_id: int | None = None
    force: bool = False


@dataclass(frozen=True)
class TokenizerSpec:
    """The output vocabulary: ``source`` "base", "union" or a model path; ``tokens`` to add or set;
    embedding rows rounded up to ``pad_to_multiple_of``."""

    source: str
    tokens: dict[str, TokenRow] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None


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


def evaluate(value: Any, tensor_name: str, t: float) -> Any:
    """A parameter's value for one tensor at layer position t in [0, 1] (``_MISSING`` if no filter matches)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for item in value:
            pattern = item.get("filter")
            if pattern is None or pattern == MATCH_ALL or pattern in tensor_name:
                return evaluate(item["value"], tensor_name, t)
        return _MISSING
    if isinstance(value, list):
        if len(value) == 1:
            return value[0]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return value[int(t * (len(value) - 1))]  # booleans and strings are picked, not interpolated
        scaled = t * (len(value) - 1)
        i0 = min(len(value) - 1, math.floor(scaled))
        i1 = min(len(value) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * value[i0] + frac * value[i1]
    return value


def resolve_parameters(defaults: Mapping[str, Any], scopes: Sequence[Mapping[str, Any]], tensor_name: str,
                       t: float, *, owner: str) -> dict[str, Any]:
    """Each parameter of ``defaults`` for one tensor: the first scope that gives it a value, else the default."""
    resolved = {}
    for name, default in defaults.items():
        value = _MISSING
        for scope in scopes:
            if name in scope:
                value = evaluate(scope[name], tensor_name, t)
                if value is not _MISSING:
                    break
        if value is _MISSING:
            if default is REQUIRED:
                raise ConfigError(f"parameter {name!r} has no value for {owner} on tensor {tensor_name}",
                                  f"give `{name}` in the parameters (a filter list needs a catch-all item)")
            value = default
        resolved[name] = value
    return resolved


# -- loading and validation --------------------------------------------------------------------------
def _check_value(value: Any, where: str, default: Any = None) -> None:
    # Strings only where the parameter's default is one: a number parameter given "abc" would fail mid-merge.
    ok_scalar = (int, float, bool, str) if isinstance(default, str) else (int, float, bool)
    if isinstance(value, ok_scalar) or value is None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number", "give a finite number")
        return
    if isinstance(value, list) and value:
        if all(isinstance(v, dict) for v in value):
            for item in value:
                extra = set(item) - {"filter", "value"}
                if "value" not in item or extra:
                    raise ConfigError(f"{where}: a filter item must have `value` and optionally `filter`",
                                      "write items like {filter: self_attn, value: 0.5}")
                if item.get("filter") is not None and not isinstance(item["filter"], str):
                    raise ConfigError(f"{where}: filter {item['filter']!r} is not a string",
                                      "a filter is a substring of tensor names, e.g. self_attn")
                _check_value(item["value"], where, default)
            return
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return
        if all(isinstance(v, bool) for v in value) or (isinstance(default, str) and all(isinstance(v, str)
                                                                                        for v in value)):
            return
    raise ConfigError(f"{where}: {value!r} is not a parameter value",
                      "use a number, a list of numbers (gradient), a list of booleans, "
                      "or a list of {filter, value} items")


class _Unused:
    """Collects the parameters a method does not use: warnings, or the first one as an error (``strict``)."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.lines: list[str] = []

    def __call__(self, message: str, fix: str) -> None:
        if self.strict:
            raise ConfigError(message, f"{fix} (or drop --strict: mergekit ignores it)")
        self.lines.append(f"{message}; ignored, as mergekit ignores it")


def _known_parameters() -> set[str]:
    """Every parameter name some registered merge method uses (others are typos: refused, not ignored)."""
    from evosuite import plugin_manager

    names: set[str] = set()
    for method_name in plugin_manager.get_host().registry("methods").names():
        method = plugin_manager.get("methods", method_name)
        names.update(method.global_parameters, method.model_parameters)
    return names


def _check_params(params: Any, valid: Mapping[str, Any], where: str, method: str, unused: _Unused) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: `parameters` must be a mapping", "write `parameters: {name: value}`")
    kept = {}
    for name, value in params.items():
        if name not in valid and name not in _known_parameters():  # a typo, not another method's parameter
            raise ConfigError(f"unknown parameter {name!r} for merge method {method!r} in {where}",
                              f"valid parameters: {', '.join(sorted(valid)) or 'none'}")
        if name not in valid:
            unused(f"merge method {method!r} does not use parameter {name!r} ({where})",
                   f"remove it; parameters used here: {', '.join(sorted(valid)) or 'none'}")
            continue
        _check_value(value, f"{where}, parameter {name!r}", valid[name])
        kept[name] = value
    return kept


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


# -- the output vocabulary (mergekit's `tokenizer_source` and `tokenizer:`) ----------------------------
_TOKENIZER_FIX = "write `tokenizer_source: base`, `union` or a model path, or a `tokenizer:` block"


def _tokenizer_spec(raw: Mapping[str, Any], referenced: list[str]) -> TokenizerSpec | None:
    source, block = raw.get("tokenizer_source"), raw.get("tokenizer")
    if source is not None and block is not None:
        raise ConfigError("the merge config gives both `tokenizer_source` and `tokenizer`",
                          "keep one: `tokenizer: {source: ...}` holds the same choice")
    if block is None:
        if source is None:
            return None
        if not isinstance(source, str) or not source:
            raise ConfigError(f"`tokenizer_source: {source!r}` is not a tokenizer source", _TOKENIZER_FIX)
        return TokenizerSpec(source)
    if not isinstance(block, dict):
        raise ConfigError("`tokenizer` must be a mapping", "write `tokenizer: {source: union, tokens: {...}}`")
    extra = sorted(set(block) - {"source", "tokens", "pad_to_multiple_of"})
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in `tokenizer`", "valid keys: pad_to_multiple_of, source, tokens")
    source = block.get("source", "union")  # mergekit's default for the block
    if not isinstance(source, str) or not source:
        raise ConfigError(f"`tokenizer.source: {source!r}` is not a tokenizer source", _TOKENIZER_FIX)
    pad = block.get("pad_to_multiple_of")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad <= 0):
        raise ConfigError(f"`tokenizer.pad_to_multiple_of: {pad!r}` is not a positive integer",
                          "give e.g. `pad_to_multiple_of: 64`, or leave it out")
    tokens = block.get("tokens") or {}
    if not isinstance(tokens, dict):
        raise ConfigError("`tokenizer.tokens` must be a mapping", "write `tokens: {TOKEN: {source: MODEL}}`")
    rows = {str(tok): _token_row(tok, entry, referenced) for tok, entry in tokens.items()}
    return TokenizerSpec(source, rows, pad)


def _token_row(token: Any, entry: Any, referenced: list[str]) -> TokenRow:
    where = f"`tokenizer.tokens` entry {token!r}"
    if not isinstance(entry, dict) or "source" not in entry:
        raise ConfigError(f"{where} has no `source`",
                          "give `source: MODEL`, `{kind: model_token, model: M, token: T}` or `{kind: zero}`")
    extra = sorted(set(entry) - {"source", "force"})
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in {where}", "valid keys: force, source")
    force = entry.get("force", False)
    if not isinstance(force, bool):
        raise ConfigError(f"{where}: `force: {force!r}` is not true or false", "write `force: true` or leave it out")
    source = entry["source"]

    def known(model: Any) -> str:
        if model not in referenced:
            raise ConfigError(f"{where} takes its row from {model!r}, which the merge does not use",
                              f"name one of: {', '.join(referenced)}")
        return model

    if isinstance(source, str):
        return TokenRow("model", known(source), force=force)
    kind = source.get("kind") if isinstance(source, dict) else None
    if kind == "zero" and set(source) == {"kind"}:
        return TokenRow("zero", force=force)
    if kind == "model_token" and set(source) <= {"kind", "model", "token", "token_id"}:
        tok, tok_id = source.get("token"), source.get("token_id")
        if (tok is None) == (tok_id is None) or (tok_id is not None and (isinstance(tok_id, bool)
                                                                         or not isinstance(tok_id, int))):
            raise ConfigError(f"{where}: a model_token source needs exactly one of `token` and `token_id`",
                              "write `{kind: model_token, model: M, token: T}` (or an integer `token_id`)")
        return TokenRow("model_token", known(source.get("model")), None if tok is None else str(tok), tok_id,
                        force)
    raise ConfigError(f"{where}: {source!r} is not a row source",
                      "give a model path, `{kind: model_token, model: M, token: T}` or `{kind: zero}`")
