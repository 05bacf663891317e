"""The ``ps`` merge space: parameter-space merging, the paper's first axis.

A genome holds, for each layer group and each source model, the values of the merge method's searched
per-model parameters (by default TIES with DARE: a density and a weight). Genes in [0, 1] map linearly
onto each parameter's range. Layer groups: ``global`` (one group, the paper's best setting), ``layer``
(one per layer), or an integer k (every k layers). Tensors outside the layers (embeddings, final norm,
head) take the mean of the groups' values.

Candidates are built in memory, tensor by tensor, from the sources as loaded (no float32 copies of them),
on the candidate's device, and each genome is merged straight into one reusable copy of the carrier model
(for a VLM: its language model; vision tower and projector stay as they are).

Fixed recipes (``evosuite.plugins.recipes``): ``references`` builds the run's baselines for the final table,
``baseline_genomes`` encodes them as genomes of this space for the warm start.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from evosuite import hookimpl
from evosuite.api import REQUIRED, LoadedModel, MergeSpace
from evosuite.errors import ConfigError
from evosuite.plugin_manager import get
from evosuite.plugins.recipes import global_params, per_source_params, resolve_baselines

#: Default ranges of the searched values: a weight of 1 (the hand recipes' task arithmetic, TIES...) sits in the
#: middle, with room beyond; a density cannot leave [0, 1].
DEFAULT_RANGES = {"density": [0.0, 1.0], "weight": [0.0, 2.0]}
#: How far inside (0, 1) DELLA's density +- epsilon is kept.
DELLA_MARGIN = 1e-3


class ParameterSpace(MergeSpace):
    name = "ps"
    description = "parameter-space merge: per-source merge parameters per layer group, TIES+DARE by default"
    needs_base = True
    options = {
        "method": "dare_ties",
        "granularity": "global",
        "parameters": None,  # searched per-model parameters; default: the method's search_parameters
        "ranges": {},  # parameter -> [low, high]; defaults in DEFAULT_RANGES, [0, 1] otherwise
        "method_options": {},  # global parameters of the method (normalize, lambda...)
        # Keep float32 task vectors of every source (4 bytes a parameter each) instead of forming them per
        # candidate: a little faster, much bigger (see evosuite.merge.in_memory).
        "precompute_deltas": False,
        # DARE / DELLA: keep each tensor's random draws (4 bytes a parameter per source) from the first
        # candidate instead of drawing them for every one: the same masks, a CPU merge ~2x faster (134M).
        "keep_draws": False,
    }

    def __init__(self, sources, source_names, base, carrier, *, seed=0, **options):
        super().__init__(sources, source_names, base, carrier, seed=seed, **options)
        self.validate_options(self.settings)
        self.method = get("methods", self.settings["method"])
        if self.method.requires_base and base is None:
            raise ConfigError(f"merge method {self.method.name!r} needs a base model",
                              "set base_model in the run configuration")
        self.parameters = self._searched_parameters()
        self.ranges = {p: self._range(p) for p in self.parameters}
        self.global_params = self._global_params()
        self.num_layers = carrier.num_layers
        self.groups = self._layer_groups()
        from evosuite.merge.in_memory import TaskVectorMerger  # torch: imported when a space is built

        self._candidate = carrier.clone()
        self._out = self._candidate.mergeable_parameters()
        # Merged where the candidate lives (device: cuda merges on the GPU), from the sources as loaded.
        self._merger = TaskVectorMerger(base.mergeable_parameters() if base is not None else None,
                                        [s.mergeable_parameters() for s in self.sources], self.method,
                                        names=list(self._out), device=next(iter(self._out.values())).device,
                                        precompute_deltas=bool(self.settings["precompute_deltas"]),
                                        keep_draws=bool(self.settings["keep_draws"]),
                                        seed_names=self._seed_names())
        self._group_of = {name: self._group_index(self._candidate.layer_index(name)) for name in self._out}

    def memory_note(self) -> str | None:
        held = self._merger.option_bytes()
        if not held:
            return None
        model = sum(t.numel() * t.element_size() for t in self._out.values())
        parts = [f"{option} holds {size / 2**30:.2f} GiB ({size / model:.1f} model sizes)"
                 for option, size in held.items()]
        return "; ".join(parts) + " beyond the models, for speed (turn it off to save the memory)"

    def _seed_names(self) -> dict[str, str]:
        """Each merged tensor's full name (a causal LM's checkpoint name): random methods (DARE) seed from it,
        as ``evosuite merge`` does, so the exported recipe draws the same masks."""
        return {name: self._candidate.checkpoint_name(name) for name in self._out}

    # -- configuration -----------------------------------------------------------------------------
    @classmethod
    def validate_options(cls, settings: dict[str, Any]) -> None:
        """The checks that need no model: run before any model loads (``evosuite.runner.Plan``)."""
        wanted = settings["parameters"]
        problems = [
            ("method", not isinstance(settings["method"], str), "a merge method's name, e.g. dare_ties"),
            ("parameters", wanted is not None and not (isinstance(wanted, list)
                                                       and all(isinstance(p, str) for p in wanted)),
             "a list of parameter names, e.g. [density, weight]"),
            ("method_options", not isinstance(settings["method_options"], dict),
             "a mapping, e.g. {normalize: true}"),
            ("ranges", not isinstance(settings["ranges"], dict), "a mapping, e.g. {weight: [0.0, 1.0]}"),
        ]
        for key, wrong, expected in problems:
            if wrong:
                raise ConfigError(f"the ps space's option {key} is {settings[key]!r}", f"give {expected}")
        get("methods", settings["method"])  # an unknown method: "did you mean", before the models load
        for name, given in settings["ranges"].items():
            _check_range(name, given)

    def _searched_parameters(self) -> list[str]:
        declared = self.method.model_parameters
        wanted = self.settings["parameters"]
        if wanted is None:
            wanted = list(self.method.search_parameters)
        for p in wanted:
            if p not in declared:
                raise ConfigError(f"merge method {self.method.name!r} has no per-model parameter {p!r}",
                                  f"choose from {', '.join(declared) or 'none'}")
        missing = [p for p, d in declared.items() if d is REQUIRED and p not in wanted]
        if missing:
            raise ConfigError(f"parameter {missing[0]!r} of {self.method.name!r} is required but not searched",
                              "add it to the space's `parameters` option")
        if not wanted:
            raise ConfigError(f"merge method {self.method.name!r} has no per-model parameters to search",
                              "choose a method such as dare_ties, ties, task_arithmetic or linear")
        return list(wanted)

    def _range(self, name: str) -> list[float]:
        given = self.settings["ranges"].get(name)
        if given is None:
            low, high = DEFAULT_RANGES.get(name, [0.0, 1.0])
            if name == "density" and "epsilon" in self.method.model_parameters and "epsilon" not in self.parameters:
                # DELLA samples densities in density +- epsilon, which must stay inside (0, 1).
                eps = float(self.method.model_parameters["epsilon"])
                low, high = max(low, eps + DELLA_MARGIN), min(high, 1.0 - eps - DELLA_MARGIN)
            return [low, high]
        _check_range(name, given)
        return [float(given[0]), float(given[1])]

    def _global_params(self) -> dict[str, Any]:
        given = dict(self.settings["method_options"])
        unknown = sorted(set(given) - set(self.method.global_parameters))
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r} for merge method {self.method.name!r}",
                              f"valid: {', '.join(self.method.global_parameters) or 'none'}")
        params = {k: v for k, v in self.method.global_parameters.items() if v is not REQUIRED}
        params.update(given)
        missing = [k for k in self.method.global_parameters if k not in params]
        if missing:
            raise ConfigError(f"merge method {self.method.name!r} needs {missing[0]!r}",
                              "give it under the space's method_options")
        return params

    def _layer_groups(self) -> list[list[int]]:
        granularity = self.settings["granularity"]
        layers = list(range(self.num_layers))
        if granularity == "global":
            return [layers]
        if granularity == "layer":
            return [[i] for i in layers]
        if isinstance(granularity, int) and not isinstance(granularity, bool) and granularity >= 1:
            return [layers[i:i + granularity] for i in range(0, self.num_layers, granularity)]
        raise ConfigError(f"granularity {granularity!r} is not valid",
                          "use 'global', 'layer', or a number of layers per group")

    def _group_index(self, layer: int | None) -> int | None:
        if layer is None:
            return None
        return next(g for g, members in enumerate(self.groups) if layer in members)

    # -- genome <-> parameters ---------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return len(self.groups) * len(self.sources) * len(self.parameters)

    def decode(self, genome) -> list[list[dict[str, float]]]:
        """Per group, per source: parameter name -> value."""
        if len(genome) != self.dimension:
            raise ConfigError(f"genome has {len(genome)} genes, the space needs {self.dimension}",
                              "use a genome from a run of the same configuration")
        values = iter(genome)
        decoded = []
        for _ in self.groups:
            per_source = []
            for _ in self.sources:
                params = {}
                for p in self.parameters:
                    low, high = self.ranges[p]
                    params[p] = low + min(1.0, max(0.0, float(next(values)))) * (high - low)
                per_source.append(self._valid(params))
            decoded.append(per_source)
        return decoded

    def _valid(self, params: dict[str, float]) -> dict[str, float]:
        """Every genome must be a candidate: the method's unsearched per-model parameters take their defaults,
        and DELLA's density +- epsilon is kept inside (0, 1) whatever the ranges."""
        for name, default in self.method.model_parameters.items():
            if name not in params and default is not REQUIRED:
                params[name] = default
        if "epsilon" not in self.method.model_parameters or "density" not in params:
            return params
        eps = max(0.0, min(float(params["epsilon"]), 0.5 - DELLA_MARGIN))
        params["epsilon"] = eps
        if params["density"] < 1.0:
            params["density"] = min(max(params["density"], eps + DELLA_MARGIN), 1.0 - eps - DELLA_MARGIN)
        return params

    def encode(self, per_source: list[dict[str, float]]) -> list[float]:
        """The genome that gives every group the same per-source values."""
        genome = []
        for _ in self.groups:
            for params in per_source:
                for p in self.parameters:
                    low, high = self.ranges[p]
                    genome.append((params[p] - low) / (high - low) if high > low else 0.0)
        return genome

    def _outside_layers(self, decoded) -> list[dict[str, float]]:
        """Per source, the values of the tensors outside every layer (embeddings, norm, head): the groups' mean."""
        return [{p: sum(group[s][p] for group in decoded) / len(decoded) for p in decoded[0][s]}
                for s in range(len(self.sources))]

    def candidate(self, genome) -> LoadedModel:
        decoded = self.decode(genome)
        mean = self._outside_layers(decoded)

        def params_for(name):
            group = self._group_of[name]
            return (mean if group is None else decoded[group]), self.global_params

        self._merger.merge_into(self._out, params_for, seed=self.seed)
        return self._candidate

    # -- fixed recipes: the final table's baselines and the warm start ---------------------------------
    @classmethod
    def check_baselines(cls, baselines, source_names, has_base):
        resolve_baselines(baselines, source_names, has_base)

    def references(self, baselines=None):
        from evosuite.merge.in_memory import merge_once

        def build(recipe):
            method = get("methods", recipe["method"])
            per_source = per_source_params(recipe, self.source_names)
            options = global_params(recipe)
            base = self.base.mergeable_parameters() if self.base is not None else None
            merge_once(self._out, base, [s.mergeable_parameters() for s in self.sources], method,
                       lambda name: (per_source, options), seed=self.seed, seed_names=self._seed_names())
            return self._candidate

        recipes = resolve_baselines(baselines, self.source_names, self.base is not None)
        return {recipe["name"]: (lambda r=recipe: build(r)) for recipe in recipes}

    def baseline_genomes(self, baselines=None):
        """Each baseline's per-model values in this space's genome: exact when the baseline uses the space's
        method and global options; otherwise the nearest genome (values the space's method lacks take its
        defaults), and the notes say so. Values outside a range are clamped to it."""
        out = []
        for recipe in resolve_baselines(baselines, self.source_names, self.base is not None):
            given = per_source_params(recipe, self.source_names)
            notes, clamped_values = [], []
            options = global_params(recipe)
            differ = ", ".join(f"{k} {v}" for k, v in options.items() if self.global_params.get(k, v) != v)
            if recipe["method"] != self.method.name or differ:
                notes.append(f"approximated: the space merges with {self.method.name}, the baseline with "
                             f"{recipe['method']}" + (f" ({differ})" if differ else ""))
            baseline_method = get("methods", recipe["method"])
            if (options.get("normalize") and not getattr(baseline_method, "sign_election", False)
                    and not self.global_params.get("normalize", False)):
                # The baseline divides its mix by the sum of its weights (a scalar: no sign election, whose
                # divisor varies per entry) and the space does not: weights / sum give the same mix (for a
                # linear average in a task-arithmetic space exactly, since the base then cancels).
                total = sum(float(p.get("weight", 0.0)) for p in given)
                if abs(total) > 1e-8:
                    given = [{**p, "weight": float(p["weight"]) / total} if "weight" in p else p for p in given]
                    notes.append(f"weights divided by their sum {total:g} (the baseline normalizes, the space "
                                 "does not)")
            per_source = []
            for name, params in zip(self.source_names, given):
                values = {}
                for p in self.parameters:
                    default = self.method.model_parameters.get(p)
                    value = params.get(p, default if default is not REQUIRED else None)
                    low, high = self.ranges[p]
                    if value is None:
                        value = (low + high) / 2
                    clamped = min(high, max(low, value))
                    if clamped != value:
                        clamped_values.append(f"{p} of {name} {value:g} clamped to [{low:g}, {high:g}]")
                    values[p] = clamped
                per_source.append(values)
            if clamped_values:
                notes.append(", ".join(clamped_values))
            out.append((recipe["name"], self.encode(per_source), notes))
        return out

    def mergekit_recipe(self, genome) -> tuple[dict[str, Any] | None, str]:
        """The genome's merge as a mergekit-style recipe, from which ``evosuite merge`` computes the very
        tensors ``export`` writes, or (None, why it cannot be one).

        Values are written unrounded (YAML keeps a float exactly); a layer group's values are a filter item
        per layer (``model.layers.3.``: exact, where a gradient would interpolate), the groups' mean a
        catch-all for the tensors outside the layers, as ``candidate`` merges them. ``dtype: float32`` is the
        precision the space computes in, ``out_dtype`` the models' as loaded; ``seed`` seeds the random
        methods per tensor (mergekit has no such key: it ignores it, and its DARE masks are not evosuite's).
        """
        why = self._mergekit_obstacle()
        if why:
            return None, why
        decoded = self.decode(genome)
        outside = self._outside_layers(decoded)
        prefixes = self._layer_prefixes()
        models = []
        for s, source in enumerate(self.sources):
            params: dict[str, Any] = {}
            for p in decoded[0][s]:
                if len(self.groups) == 1:
                    params[p] = float(decoded[0][s][p])
                    continue
                params[p] = [{"filter": prefixes[layer], "value": float(decoded[g][s][p])}
                             for g, members in enumerate(self.groups) for layer in members]
                params[p].append({"value": float(outside[s][p])})
            models.append({"model": _model_ref(source), "parameters": params})
        dtype = str(next(iter(self._out.values())).dtype).removeprefix("torch.")
        recipe = {"merge_method": self.method.name, "models": models, "parameters": dict(self.global_params),
                  "dtype": "float32", "out_dtype": dtype, "seed": int(self.seed)}
        if self.base is not None:
            recipe["base_model"] = _model_ref(self.base)
        return recipe, ""

    def _mergekit_obstacle(self) -> str:
        """Why no mergekit recipe rebuilds this space's merges ("" when one does)."""
        merged = set(self._seed_names().values())
        kept = [n for n, _ in self._candidate.module.named_parameters() if n not in merged]
        if kept:
            return (f"the carrier keeps weights the merge leaves as they are ({kept[0]}, e.g. a VLM's vision "
                    "tower), which a mergekit recipe cannot say")
        vocab = self._candidate.tokenizer.get_vocab() if self._candidate.tokenizer is not None else None
        for model in self.sources + ([self.base] if self.base is not None else []):
            if any(model.checkpoint_name(n) != self._candidate.checkpoint_name(n) for n in self._out):
                return f"{model.name_or_path} names its weights differently from the carrier (another family)"
            if vocab is not None and model.tokenizer is not None and model.tokenizer.get_vocab() != vocab:
                return f"{model.name_or_path} was aligned to the carrier's vocabulary when it was loaded"
        return ""

    def _layer_prefixes(self) -> dict[int, str]:
        """Layer -> the start its tensors' checkpoint names share (``model.layers.3.``): a filter for that layer."""
        names: dict[int, list[str]] = {}
        for name in self._out:
            layer = self._candidate.layer_index(name)
            if layer is not None:
                names.setdefault(layer, []).append(self._candidate.checkpoint_name(name))
        prefixes = {}
        for layer, group in names.items():
            common = os.path.commonprefix(group)
            prefixes[layer] = common[:common.rfind(".") + 1] if len(group) > 1 else common
        return prefixes

    def gene_names(self):
        multi = len(self.groups) > 1
        return [f"{p} of {name}" + (f" (layers {members[0]}-{members[-1]})" if multi else "")
                for members in self.groups for name in self.source_names for p in self.parameters]

    def recipe(self, genome) -> dict[str, Any]:
        decoded = self.decode(genome)
        return {
            "space": self.name,
            "method": self.method.name,
            "method_options": self.global_params,
            "seed": self.seed,
            "groups": [
                {"layers": [members[0], members[-1]],
                 "sources": {name: {p: round(v, 6) for p, v in params.items() if p in self.parameters}
                             for name, params in zip(self.source_names, decoded[g])}}
                for g, members in enumerate(self.groups)
            ],
        }

    # -- what a run's report and model card show (evosuite.api.MergeSpace) ---------------------------
    card_tags = ("parameter-space-merge",)

    @classmethod
    def describe(cls, recipe):
        from evosuite.plugins.space_reports import ps_describe

        return ps_describe(recipe)

    @classmethod
    def figure(cls, recipe, *, label, colors):
        from evosuite.plugins.space_reports import ps_report_figure

        return ps_report_figure(recipe, label=label, colors=colors)


def _model_ref(model: LoadedModel) -> str:
    """How a recipe names a loaded model: its absolute path when it is a local directory, else the hub id."""
    ref = Path(model.name_or_path).expanduser()
    return str(ref.resolve()) if ref.is_dir() else str(model.name_or_path)


def _check_range(name: Any, given: Any) -> None:
    ok = (isinstance(given, (list, tuple)) and len(given) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in given)
          and given[0] <= given[1])
    if not ok:
        raise ConfigError(f"ranges.{name} is {given!r}, not [low, high]",
                          f"give two numbers, low <= high, e.g. ranges: {{{name}: [0.0, 1.0]}}")


@hookimpl
def register_merge_spaces(register):
    register(ParameterSpace)

