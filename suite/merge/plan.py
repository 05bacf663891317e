"""Planning a merge: every output tensor, its inputs, shape, dtypes and shard, checked before any is computed.

``build_plan`` opens the models' headers, matches each output tensor to its counterparts in every source
(whole models, or the layer ranges of ``slices``), checks names and shapes, picks mergekit's compute and
output dtypes, orders the tensors (embeddings, layers, the rest) and lays them out in shards; with
``tokenizer_source`` it also builds the output vocabulary. The result, a ``MergePlan``, is what
``--dry-run`` prints and what the writer executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from evosuite.architectures import Layout, Module
from evosuite.errors import ConfigError, ModelError
from evosuite.merge.config import MergeConfig, ModelEntry
from evosuite.merge.sources import FROM_ST, ModelSource
from evosuite.merge.tokenizer import OutputVocabulary, build_output_vocabulary

DEFAULT_SHARD_SIZE = 5 * 1024**3
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "vocab.txt", "chat_template.jinja",
                   "spiece.model")
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TensorJob:
    """One output tensor: where its inputs come from and where its parameters are looked up."""

    name: str
    t: float
    base: tuple[ModelSource, str] | None
    sources: list[tuple[ModelEntry, ModelSource, str]]
    scopes: list[Mapping[str, Any]]
    shape: tuple[int, ...]
    dtype: torch.dtype
    #: One row per token: aligned by token string when the config names a tokenizer source.
    embedding: bool = False
    #: The base model of the job's merge (its rows are the default for tokens other models lack).
    base_model: str | None = None
    #: The dtype the merge computes in (rounding emulated in float32 buffers when narrower).
    compute: torch.dtype = torch.float32

    @property
    def nbytes(self) -> int:
        return int(torch.Size(self.shape).numel()) * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class MergePlan:
    """Everything a merge will do, checked before any tensor is computed (what ``--dry-run`` prints)."""

    config: MergeConfig
    out_dir: Path
    jobs: list[TensorJob]
    shards: list[list[TensorJob]]
    reference: ModelSource
    tokenizer: ModelSource | None
    num_layers: int
    warnings: list[str] = field(default_factory=list)
    #: The output tokenizer and row maps (None without ``tokenizer_source``: embeddings merge by index).
    vocabulary: OutputVocabulary | None = None
    #: Slices: per output layer, (model, source layer) of the slice's first source; None for ``models:``.
    layer_map: list[tuple[str, int]] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(job.nbytes for job in self.jobs)

    def describe(self) -> str:
        cfg = self.config
        models = sorted({src.ref for job in self.jobs for _, src, _ in job.sources})
        tokenizer = ("built from the models' tokenizers" if self.vocabulary else
                     self.tokenizer.ref if self.tokenizer else "(none)")
        lines = [f"merge method: {cfg.merge_method}",
                 f"base model:   {cfg.base_model or '(none)'}",
                 f"models:       {', '.join(models)}",
                 f"tensors:      {len(self.jobs)} in {len(self.shards)} shard(s), "
                 f"{self.total_bytes / 1024**3:.2f} GiB, {self.num_layers} layers",
                 f"dtype:        {str(self.jobs[0].dtype).replace('torch.', '') if self.jobs else '?'}",
                 f"computed in:  {str(self.jobs[0].compute).replace('torch.', '') if self.jobs else '?'}",
                 f"tokenizer:    {tokenizer}",
                 *([f"vocabulary:   {self.vocabulary.summary}"] if self.vocabulary else []),
                 f"output:       {self.out_dir}"]
        lines += self._describe_layers()
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _describe_layers(self) -> list[str]:
        """The layer mapping: per module its layer names and gradient positions, or the slices' layer map."""
        layout = self.reference.layout
        if self.layer_map is None:
            return [f"layers:       {m.name}: {m.template} x {m.num_layers}, gradient t = i/{max(m.num_layers - 1, 1)}"
                    + (" (inferred from the tensor names)" if layout.inferred else "") for m in layout.modules]
        module = layout.modules[0]
        lines, start = [f"layers:       {module.name}: {module.template} x {self.num_layers} from slices"], 0
        for end in range(1, len(self.layer_map) + 1):
            if end < len(self.layer_map) and self.layer_map[end][0] == self.layer_map[start][0] \
                    and self.layer_map[end][1] == self.layer_map[end - 1][1] + 1:
                continue
            (ref, first), last = self.layer_map[start], self.layer_map[end - 1][1]
            lines.append(f"  out {start}-{end - 1} <- {ref} layers {first}-{last}")
            start = end
        return lines



def _sources(plan: MergePlan) -> list[ModelSource]:
    found = [plan.reference] + ([plan.tokenizer] if plan.tokenizer else [])
    for job in plan.jobs:
        found += ([job.base[0]] if job.base else []) + [src for _, src, _ in job.sources]
    return found



def _open(refs: dict[str, ModelSource], ref: str) -> ModelSource:
    if ref not in refs:
        refs[ref] = ModelSource(ref)
    return refs[ref]


def _check_shapes(job_name: str, ref: ModelSource, ref_name: str, others: list[tuple[ModelSource, str]],
                  *, aligned: bool) -> tuple:
    """The output shape; every input must have it, except the rows of embeddings that are ``aligned``
    by token (any vocabulary size) and that, unaligned, get an error naming ``tokenizer_source``."""
    shape = ref.meta[ref_name][0]
    embedding = ref.is_embedding(ref_name)
    for src, name in others:
        if name not in src.meta:
            raise ModelError(f"tensor {name} is missing from model {src.ref!r}",
                             "merge models of the same architecture")
        other = src.meta[name][0]
        if embedding and src.is_embedding(name) and other[1:] == shape[1:] and other[0] != shape[0]:
            if aligned:
                continue
            raise ModelError(f"models {ref.ref!r} and {src.ref!r} have different vocabulary sizes ({shape[0]} and "
                             f"{other[0]} rows of {job_name}); merged by index, their rows would not match",
                             "set `tokenizer_source: base` (or `union`, or a model path) to align them by token, "
                             "as mergekit does")
        if other != shape:
            raise ModelError(f"tensor {job_name} has shape {list(shape)} in {ref.ref!r} but "
                             f"{list(src.meta[name][0])} in {src.ref!r}", "merge models of the same architecture")
    return shape


def _order_key(layout: Layout):
    """Output order: embeddings, then the layers (module by module), then the rest (final norm, head...)."""
    order = {m.name: i for i, m in enumerate(layout.modules)}

    def key(name: str) -> tuple:
        module, layer = layout.locate(name)
        if module is not None:
            return (1, order[module.name], layer, name)
        return (0 if layout.is_embedding(name) else 2, 0, 0, name)
    return key


def _counterpart(name: str, ref: ModelSource, src: ModelSource) -> str:
    """The name in ``src`` of ``ref``'s tensor ``name``: checkpoints of one family may name a module otherwise
    (a hub LLaVA's ``vision_tower.vision_model.`` against ``save_pretrained``'s ``vision_tower.``, GPT-2 with or
    without ``transformer.``). The output keeps ``ref``'s names."""
    if src is ref or name in src.meta:
        return name
    heads = list(zip(ref.layout.head[:1], src.layout.head[:1]))
    pairs = heads + [(m.prefix, o.prefix) for m in ref.layout.modules for o in src.layout.modules if o.name == m.name]
    for old, new in pairs:
        if name.startswith(old) and new + name[len(old):] in src.meta:
            return new + name[len(old):]
    return name


def _single_stack(src: ModelSource) -> Module:
    """The one stack of layers that slices cut; models with several (a VLM's text and vision) are refused."""
    modules = src.layout.modules
    if len(modules) != 1:
        raise ConfigError(f"slices cannot cut model {src.ref!r}: it has {len(modules)} stacks of layers "
                          f"({', '.join(m.name for m in modules)}), and a slice's layer range would apply to each",
                          "merge the whole models with `models:` (mergekit refuses slices on such models too)")
    return modules[0]


def build_plan(config: MergeConfig, out_dir: Path, *, dtype: str | None = None, compute_dtype: str | None = None,
               shard_size: int = DEFAULT_SHARD_SIZE) -> MergePlan:
    """Open every model's headers, check names and shapes, and lay the output tensors out in shards.

    As mergekit, each tensor is computed in the recipe's ``dtype``, else in the promoted dtype of its inputs
    (bfloat16 for bfloat16 checkpoints), and written in ``out_dtype``, else in that compute dtype.
    ``compute_dtype`` overrides the first (float32: the precise path), ``dtype`` the second."""
    refs: dict[str, ModelSource] = {}
    out_dtype_name = dtype or config.dtype
    for given in (out_dtype_name, compute_dtype):
        if given is not None and given not in TORCH_DTYPES:
            raise ConfigError(f"unknown dtype {given!r}", f"valid dtypes: {', '.join(TORCH_DTYPES)}")
    jobs: list[TensorJob] = []

    aligned = config.tokenizer is not None

    def add(name, t, base_ref, base_name, entries, scopes, ref_src, ref_name, base_model=None):
        base_src = _open(refs, base_ref) if base_ref else None
        base = (base_src, _counterpart(base_name, ref_src, base_src)) if base_src else None
        sources = [(e, src, _counterpart(n, ref_src, src)) for e, n in entries for src in [_open(refs, e.model)]]
        others = ([base] if base else []) + [(s, n) for _, s, n in sources]
        shape = _check_shapes(name, ref_src, ref_name, others, aligned=aligned)
        mergekit_dtype = _promoted([src.meta[n][1] for src, n in others], config.compute_dtype)
        out_dtype = TORCH_DTYPES[out_dtype_name] if out_dtype_name else mergekit_dtype
        compute = TORCH_DTYPES[compute_dtype] if compute_dtype else mergekit_dtype
        jobs.append(TensorJob(name, t, base, sources, scopes, shape, out_dtype, ref_src.is_embedding(ref_name),
                              base_model, compute))

    layer_map = None
    if config.slices is None:
        base_ref = config.base_model
        reference = _open(refs, base_ref or config.models[0].model)
        for entry in config.models:
            _open(refs, entry.model)
        layout = reference.layout
        num_layers = sum(m.num_layers for m in layout.modules)
        merged = config.non_base(config.models, base_ref)
        use_base = base_ref if config.method.takes_base else None
        for name in sorted(reference.meta, key=_order_key(layout)):
            # Each module's layers get t from its own layer count; tensors outside the layers get t = 0.
            module, layer = layout.locate(name)
            t = module.t(layer) if module is not None else 0.0
            add(name, t, use_base, name, [(e, name) for e in merged], [config.parameters], reference, name,
                base_ref)
    else:
        reference = _open(refs, config.slices[0].base_model or config.slices[0].sources[0].model)
        out_layer, layer_map = 0, []
        first, last = config.slices[0], config.slices[-1]
        prefix_jobs: list[tuple] = []
        out_stack = _single_stack(reference)
        if reference.config and out_stack.count_key is None:
            raise ConfigError(f"model {reference.ref!r}: its config.json has no layer count evosuite knows, so a "
                              "frankenmerge's config could not say how many layers it has",
                              "declare the family's `num_layers` key in evosuite/architectures.json")
        for spec in config.slices:
            scopes = [spec.parameters, config.parameters]
            slice_ref = _open(refs, spec.sources[0].model)
            stack = _single_stack(slice_ref)
            start = spec.sources[0].layer_range[0]
            for entry in spec.sources:
                src_stack = _single_stack(_open(refs, entry.model))
                if entry.layer_range[1] > src_stack.num_layers:
                    raise ConfigError(f"slice layer range {list(entry.layer_range)} of model {entry.model!r} goes "
                                      f"past its {src_stack.num_layers} layers",
                                      f"give ranges within [0, {src_stack.num_layers}]")
            merged = config.non_base(spec.sources, spec.base_model)
            base_ref = spec.base_model if config.method.takes_base else None
            base_entry = next((s for s in spec.sources if s.model == base_ref), None)
            base_start = base_entry.layer_range[0] if base_entry else start
            for idx in range(spec.num_layers):
                t = idx / (spec.num_layers - 1) if spec.num_layers > 1 else 1.0
                for name in sorted(slice_ref.meta, key=_order_key(slice_ref.layout)):
                    if stack.layer_of(name) != start + idx:
                        continue

                    def at(layer, name=name, stack=stack):
                        return stack.renumber(name, layer)

                    add(out_stack.prefix + at(out_layer)[len(stack.prefix):], t, base_ref, at(base_start + idx),
                        [(e, at(e.layer_range[0] + idx)) for e in merged], scopes, slice_ref, name)
                layer_map.append((spec.sources[0].model, start + idx))
                out_layer += 1
        num_layers = out_layer
        for spec, wanted in ((first, True), (last, False)):  # embeddings from the first slice, the rest from the last
            base_ref = spec.base_model if config.method.takes_base else None
            src = _open(refs, spec.sources[0].model)
            order = _order_key(src.layout)
            for name in sorted(src.meta, key=order):
                if src.layout.in_layer(name) or (order(name)[0] == 0) != wanted:
                    continue
                entries = [(e, name) for e in config.non_base(spec.sources, spec.base_model)]
                prefix_jobs.append((name, 0.0, base_ref, name, entries, [spec.parameters, config.parameters], src, name,
                                    spec.base_model))
        layer_jobs, jobs[:] = list(jobs), []
        for args in prefix_jobs:
            add(*args)
        order = _order_key(reference.layout)
        pre = [j for j in jobs if order(j.name)[0] == 0]
        post = [j for j in jobs if order(j.name)[0] != 0]
        jobs[:] = pre + layer_jobs + post

    vocabulary = _output_vocabulary(config, refs, jobs, reference) if aligned else None
    shards: list[list[TensorJob]] = [[]]
    size = 0
    for job in jobs:
        if shards[-1] and size + job.nbytes > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(job)
        size += job.nbytes

    tokenizer, warnings = None, list(config.warnings) + (list(vocabulary.warnings) if vocabulary else [])
    if vocabulary is None:  # copied as is from the base (mergekit's copy_tokenizer)
        tok_ref = config.base_model or (config.models[0].model if config.models else reference.ref)
        tok_src = _open(refs, tok_ref)
        if any((tok_src.path / f).is_file() for f in TOKENIZER_FILES):
            tokenizer = tok_src
        else:
            warnings.append(f"model {tok_ref!r} has no tokenizer files; the output has none")
    return MergePlan(config, out_dir, jobs, shards, reference, tokenizer, num_layers, warnings, vocabulary,
                     layer_map)


def _promoted(st_dtypes: list[str], recipe_dtype: str | None) -> torch.dtype:
    """mergekit's compute dtype for one tensor: the recipe's ``dtype``, else its inputs' promoted dtype."""
    if recipe_dtype:
        return TORCH_DTYPES[recipe_dtype]
    dtype = FROM_ST.get(st_dtypes[0], torch.float32)
    for name in st_dtypes[1:]:
        dtype = torch.promote_types(dtype, FROM_ST.get(name, torch.float32))
    return dtype if dtype in TORCH_DTYPES.values() else torch.float32


def _output_vocabulary(config: MergeConfig, refs: dict[str, ModelSource], jobs: list[TensorJob],
                       reference: ModelSource) -> OutputVocabulary:
    """The output tokenizer of ``config.tokenizer``, and the embedding jobs resized to its rows."""
    models = config.referenced_models()
    sources = {ref: _open(refs, ref) for ref in models}
    rows = {}
    for ref, src in sources.items():
        if src.vocab_rows is None:
            raise ModelError(f"cannot find the token embeddings of model {ref!r} to align its vocabulary",
                             "give its config.json a `vocab_size`")
        rows[ref] = src.vocab_rows
    if not any(job.embedding for job in jobs):
        raise ModelError(f"model {reference.ref!r} has no tensor with one row per token ({rows[reference.ref]})",
                         "align vocabularies only for models with token embeddings, or drop `tokenizer_source`")
    vocabulary = build_output_vocabulary(config.tokenizer, models, models[0],
                                         {ref: src.path for ref, src in sources.items()}, rows, ModelSource._resolve)
    for job in jobs:
        if job.embedding:
            job.shape = (vocabulary.rows, *job.shape[1:])
    return vocabulary

