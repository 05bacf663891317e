"""The on-disk merge engine: a mergekit YAML config in, a Hugging Face model directory out.

It works tensor by tensor: each output tensor is read from the memory-mapped safetensors of its sources,
merged (``merge_tensor``, shared with the in-memory merger), and streamed into an output shard whose
header was computed beforehand, so peak memory is about the largest tensor times the number of
sources, plus scratch of the same size. Nothing is left half-written: the directory is built in a temp
dir beside ``out_dir`` and renamed at the end.
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from safetensors import safe_open

from evosuite.api import Progress
from evosuite.architectures import Layout, Module, resolve, table
from evosuite.config import check_device
from evosuite.errors import ConfigError, ModelError
from evosuite.merge.config import (
    DTYPES,
    MergeConfig,
    ModelEntry,
    load_config,
    resolve_parameters,
)
from evosuite.merge.in_memory import merge_tensor
from evosuite.merge.lora import load_adapter, resolve_adapter_dir, split_lora_ref
from evosuite.merge.sparsify import Scratch
from evosuite.merge.tokenizer import OutputVocabulary, align_rows, build_output_vocabulary
from evosuite.merge.vocabulary import remap_token_ids

DEFAULT_SHARD_SIZE = 5 * 1024**3
#: Written into every merge output: the files evosuite wrote there (``--force`` replaces nothing else).
MERGE_MARKER = ".evosuite-merge"
#: Torch threads the command line uses for merging: on the 2-core development machine one thread was
#: faster than two (the work is memory-bound and the cores are shared); see perf/merge_vs_mergekit.py.
RECOMMENDED_THREADS = 1
#: Files of a model's processor that travel with it (a VLM's image processor and processor settings).
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
#: Names of input embeddings, to find a model's vocabulary rows when its config has no ``vocab_size``.
INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight",
                    "tok_embeddings.weight")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "vocab.txt", "chat_template.jinja",
                   "spiece.model")
ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FROM_ST = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


# -- sources -------------------------------------------------------------------------------------------
class ModelSource:
    """A model directory read lazily: tensor names, shapes and dtypes from the safetensors headers."""

    def __init__(self, ref: str):
        self.ref = ref
        lora = split_lora_ref(ref)
        self.path = self._resolve(lora[0] if lora else ref)
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise ModelError(f"model {ref!r} has an unreadable safetensors index: {exc}",
                                 "re-download or re-save the model") from None
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.path.glob("*.safetensors"))
            if not files:
                raise ModelError(f"model {ref!r} has no safetensors weights in {self.path}",
                                 "save it with safetensors (save_pretrained does by default)")
        self._handles: dict[str, Any] = {}
        self._fds: dict[str, int] = {}
        self.file_of: dict[str, str] = {}
        self.meta: dict[str, tuple[tuple[int, ...], str]] = {}
        self.offsets: dict[str, int] = {}
        for name in files:
            try:
                header, data_start = _read_header(self.path / name)
            except (OSError, ValueError) as exc:
                raise ModelError(f"model {ref!r}: cannot read {name}: {exc}",
                                 "re-download or re-save the model") from None
            for tensor, info in header.items():
                if tensor == "__metadata__":
                    continue
                self.file_of[tensor] = name
                self.meta[tensor] = (tuple(info["shape"]), info["dtype"])
                self.offsets[tensor] = data_start + int(info["data_offsets"][0])
        self.config = self._read_config()
        #: ``MODEL+LORA``: the adapter merged into the tensors it changes, as they are read.
        self.adapter = None
        if lora:
            shapes = {name: shape for name, (shape, _) in self.meta.items()}
            self.adapter = load_adapter(ref, resolve_adapter_dir(lora[1], self._resolve), shapes)

    @staticmethod
    def _resolve(ref: str) -> Path:
        path = Path(ref).expanduser()
        if path.is_dir():
            return path
        if "/" in ref and not ref.startswith((".", "/", "~")):
            try:
                from huggingface_hub import snapshot_download

                return Path(snapshot_download(ref, local_files_only=True))
            except Exception:
                pass
        raise ModelError(f"model {ref!r} not found", "give a local model directory (or download the hub model first)")

    def _read_config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"model {self.ref!r} has an unreadable config.json: {exc}", "fix or re-save it") from None

    @functools.cached_property
    def layout(self) -> Layout:
        """Which tensors form layer i of each module (text, vision), from the architecture table."""
        return resolve(self.config, self.meta, model=f"model {self.ref!r}")

    @property
    def vocab_rows(self) -> int | None:
        """Rows of the model's token embeddings: the config's ``vocab_size`` (a VLM's ``text_config``'s),
        else the rows of its input embedding tensor."""
        cfg = self.config
        rows = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
        if rows:
            return int(rows)
        found = [shape[0] for name, (shape, _) in self.meta.items() if name.endswith(INPUT_EMBEDDINGS)]
        return found[0] if found else None

    def is_embedding(self, name: str) -> bool:
        """Whether a tensor has one row per token (input embeddings, ``lm_head``): a 2-D tensor outside the
        layers with as many rows as the vocabulary. These are the tensors mergekit aligns by token."""
        shape = self.meta[name][0]
        return (len(shape) == 2 and not self.layout.in_layer(name) and self.vocab_rows is not None
                and shape[0] == self.vocab_rows)

    def get(self, name: str) -> torch.Tensor:
        """One tensor, memory-mapped through ``safetensors.safe_open``."""
        file = self.file_of[name]
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = safe_open(str(self.path / file), framework="pt", device="cpu")
        tensor = handle.get_tensor(name)
        return self.adapter.apply(name, tensor) if self.adapter else tensor

    def read_into(self, name: str, out: torch.Tensor, staging: torch.Tensor) -> torch.Tensor:
        """Read one tensor's bytes straight into flat CPU ``out`` (converting its dtype through the uint8
        ``staging`` buffer when it differs): no mapping stays resident, no allocation per tensor."""
        if self.adapter is not None and name in self.adapter.changes:
            return out.copy_(self.get(name).reshape(-1))
        shape, st_dtype = self.meta[name]
        dtype = FROM_ST[st_dtype]
        numel = int(torch.Size(shape).numel())
        target = out if dtype == out.dtype else staging[: numel * _itemsize(dtype)].view(dtype)
        raw = target.view(torch.uint8).numpy()
        fd = self._fds.get(self.file_of[name])
        if fd is None:
            fd = self._fds[self.file_of[name]] = os.open(self.path / self.file_of[name], os.O_RDONLY)
        done, offset = 0, self.offsets[name]
        while done < raw.nbytes:
            n = os.preadv(fd, [raw[done:]], offset + done)
            if n <= 0:
                raise ModelError(f"model {self.ref!r}: {self.file_of[name]} is truncated at tensor {name}",
                                 "re-download or re-save the model")
            done += n
        if target is not out:
            out.copy_(target)
        return out

    def mapped_float32(self, name: str) -> torch.Tensor | None:
        """A flat float32 tensor over one tensor's bytes in the file, mapped privately for this tensor only
        (unmapped when the tensor is freed), or None when it is stored in another dtype. Reading a source
        through it into ``torch.sub(..., out=buffer)`` skips the copy ``read_into`` makes."""
        shape, st_dtype = self.meta[name]
        if FROM_ST[st_dtype] != torch.float32:
            return None
        numel = int(torch.Size(shape).numel())
        if numel == 0:
            return None
        offset = self.offsets[name]
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        fd = self._fds.get(self.file_of[name])
        if fd is None:
            fd = self._fds[self.file_of[name]] = os.open(self.path / self.file_of[name], os.O_RDONLY)
        pages = mmap.mmap(fd, offset - start + numel * 4, offset=start, access=mmap.ACCESS_COPY)
        return torch.frombuffer(pages, dtype=torch.float32, count=numel, offset=offset - start)

    def close(self) -> None:
        self._handles.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header and the offset where its data starts."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size <= 0 or size > 100 * 1024**2:
            raise ValueError("not a safetensors file")
        return json.loads(f.read(size)), 8 + size


# -- plan ----------------------------------------------------------------------------------------------
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


# -- writing -------------------------------------------------------------------------------------------
def _shard_header(jobs: list[TensorJob]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for job in jobs:
        header[job.name] = {"dtype": ST_DTYPES[job.dtype], "shape": list(job.shape),
                            "data_offsets": [offset, offset + job.nbytes]}
        offset += job.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def _tensor_bytes(tensor: torch.Tensor):
    return tensor.contiguous().view(-1).view(torch.uint8).numpy().data


def _model_card(plan: MergePlan) -> str:
    cfg = plan.config
    recipe = yaml.safe_dump(cfg.raw, sort_keys=False).rstrip()
    bases = {src.ref for job in plan.jobs for _, src, _ in job.sources}
    bases = sorted(bases | ({cfg.base_model} if cfg.base_model else set()))
    front = yaml.safe_dump({"base_model": bases, "library_name": "transformers", "tags": ["merge", "evosuite"]},
                           sort_keys=False).rstrip()
    return (f"---\n{front}\n---\n\n# Merged model\n\nThis model was merged with evosuite's `{cfg.merge_method}` "
            f"method ({cfg.method.description or cfg.merge_method}).\n\n## Models\n\n"
            + "".join(f"- {b}\n" for b in bases)
            + f"\n## Recipe\n\n```yaml\n{recipe}\n```\n")


def _write(plan: MergePlan, tmp: Path, *, seed: int, device: str, progress: Progress | None) -> None:
    method = plan.config.method
    takes_deltas = bool(getattr(method, "takes_deltas", False))
    work = Scratch("cpu")
    dev = torch.device(device)
    on_cpu = dev.type == "cpu"
    dev_work = work if on_cpu else Scratch(dev)  # inputs are read on the CPU, then copied to the device
    total, done = len(plan.jobs), 0
    names = [f"model-{i + 1:05d}-of-{len(plan.shards):05d}.safetensors" for i in range(len(plan.shards))]
    weight_map = {}
    for shard, file_name in zip(plan.shards, names):
        with open(tmp / file_name, "wb") as f:
            f.write(_shard_header(shard))
            for job in shard:
                numel = int(torch.Size(job.shape).numel())
                work.round_to = dev_work.round_to = _narrow(job.compute)
                base = None
                staging = work.get("staging", numel * 8, torch.uint8)
                aligned = _aligned_inputs(plan.vocabulary, job) if job.embedding and plan.vocabulary else None
                if job.base is not None:
                    src, name = job.base
                    if aligned is not None:
                        base = dev_work.get("base", numel).copy_(aligned[src.ref].view(-1))
                    else:
                        # read-only for every method: a float32 base is used where it lies in the file
                        base = src.mapped_float32(name) if on_cpu else None
                        if base is None:
                            base = src.read_into(name, work.get("base", numel), staging)
                        if not on_cpu:
                            base = dev_work.get("base", numel).copy_(base)
                    dev_work.round_(base)  # mergekit reads its inputs in the compute dtype
                inputs = []
                for i, (_, src, name) in enumerate(job.sources):
                    if aligned is not None:
                        x = dev_work.get(f"src{i}", numel).copy_(aligned[src.ref].view(-1))
                    else:
                        mapped = src.mapped_float32(name) if on_cpu and takes_deltas else None
                        if mapped is not None:  # source - base in one pass, straight from the file
                            x = torch.sub(mapped, base, out=work.get(f"src{i}", numel))
                            del mapped
                            inputs.append(x)
                            continue
                        x = src.read_into(name, work.get(f"src{i}", numel), staging)
                        if not on_cpu:
                            x = dev_work.get(f"src{i}", numel).copy_(x)
                    dev_work.round_(x)
                    if takes_deltas:
                        dev_work.round_(x.sub_(base))
                    inputs.append(x)
                model_params = [resolve_parameters(method.model_parameters, [entry.parameters, *job.scopes],
                                                   job.name, job.t, owner=f"model {entry.model!r}")
                                for entry, _, _ in job.sources]
                global_params = resolve_parameters(method.global_parameters, job.scopes, job.name, job.t,
                                                   owner="the merge")
                out = merge_tensor(method, job.name, base, inputs, model_params, global_params, seed=seed,
                                   out=dev_work.get("out", numel), work=dev_work, shape=job.shape)
                dev_work.round_(out)  # the compute dtype's result, then the output dtype
                result = out if job.dtype == torch.float32 else out.to(job.dtype)
                f.write(_tensor_bytes(result.cpu()))
                weight_map[job.name] = file_name
                done += 1
                if progress is not None:
                    progress(done, total)
    index = {"metadata": {"total_size": plan.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    _write_configs(plan, tmp)
    for name in PROCESSOR_FILES:
        if (plan.reference.path / name).is_file():
            shutil.copy2(plan.reference.path / name, tmp / name)
    if plan.vocabulary is not None:
        plan.vocabulary.tokenizer.save_pretrained(str(tmp))
    elif plan.tokenizer is not None:
        for name in TOKENIZER_FILES:
            if (plan.tokenizer.path / name).is_file():
                shutil.copy2(plan.tokenizer.path / name, tmp / name)
    if plan.config.chat_template is not None:
        from evosuite.merge.chat_template import set_chat_template

        set_chat_template(tmp, plan.config.chat_template, [s.path for s in _sources(plan)])
    (tmp / "README.md").write_text(_model_card(plan))
    # The marker: what evosuite wrote here, so that --force later replaces only a folder of its own.
    written = sorted(p.name for p in tmp.iterdir())
    (tmp / MERGE_MARKER).write_text(json.dumps({"files": written}, indent=2) + "\n")


def _narrow(dtype: torch.dtype) -> torch.dtype | None:
    return None if dtype in (torch.float32, torch.float64) else dtype


def _aligned_inputs(vocabulary: OutputVocabulary, job: TensorJob) -> dict[str, torch.Tensor]:
    """The job's embedding tensors (base and sources, float32) with their rows on the output vocabulary."""
    tensors = {}
    for src, name in ([job.base] if job.base else []) + [(s, n) for _, s, n in job.sources]:
        tensors[src.ref] = src.get(name).to(torch.float32)
    return align_rows(vocabulary, tensors, job.base_model)


def _write_configs(plan: MergePlan, tmp: Path) -> None:
    """config.json (and generation_config.json) of the reference model, with the output's layer count,
    dtype and, with an aligned vocabulary, its row count and the token ids of its tokenizer."""
    vocab = plan.vocabulary
    old_vocab = vocab.vocabs.get(plan.reference.ref) if vocab else None
    config = json.loads(json.dumps(plan.reference.config))
    if config:
        if plan.layer_map is not None:
            _set_layer_count(config, plan)
        if plan.jobs:
            dtype_name = str(plan.jobs[0].dtype).replace("torch.", "")
            config["torch_dtype"] = dtype_name
            if "dtype" in config:
                config["dtype"] = dtype_name
        if vocab is not None:
            text = config.get("text_config")
            if "vocab_size" in config or not isinstance(text, dict):
                config["vocab_size"] = vocab.rows
            if isinstance(text, dict):
                text["vocab_size"] = vocab.rows
            if old_vocab is not None:
                config = remap_token_ids(config, old_vocab, vocab.ids)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = plan.reference.path / "generation_config.json"
    if generation.is_file():
        if old_vocab is not None:
            gen = remap_token_ids(json.loads(generation.read_text()), old_vocab, vocab.ids)
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        else:
            shutil.copy2(generation, tmp / "generation_config.json")


def _set_layer_count(config: dict[str, Any], plan: MergePlan) -> None:
    """A frankenmerge's config: its layer count under the key the architecture table names, and every per-layer
    list beside it (``layer_types``...) rebuilt in the output's layer order from the sources' own lists."""
    module = plan.reference.layout.modules[0]
    *path, key = module.count_key.split(".")
    owner = config
    for part in path:
        owner = owner[part]
    old_count = owner[key]
    owner[key] = plan.num_layers
    skip = set(table()["per_layer_config_skip"])
    sources = {src.ref: src for src in _sources(plan)}
    for name, value in list(owner.items()):
        if name in skip or not isinstance(value, list) or len(value) != old_count:
            continue
        rebuilt = []
        for ref, layer in plan.layer_map:
            src_owner = sources[ref].config if ref in sources else {}
            for part in path:
                src_owner = src_owner.get(part) if isinstance(src_owner, dict) else None
            own = src_owner.get(name) if isinstance(src_owner, dict) else None
            fallback = value[min(layer, len(value) - 1)]
            rebuilt.append(own[layer] if isinstance(own, list) and layer < len(own) else fallback)
        owner[name] = rebuilt


def _check_replaceable(out: Path) -> None:
    """--force replaces only an earlier merge's output: a folder with the marker and nothing else added."""
    marker = out / MERGE_MARKER
    try:
        written = set(json.loads(marker.read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"--force would delete {out}, which evosuite did not write (no readable {MERGE_MARKER})",
                          "choose another output directory, or remove that one yourself") from None
    others = sorted(p.name for p in out.iterdir() if p.name not in written and p.name != MERGE_MARKER)
    if others:
        raise ConfigError(f"--force would delete {out}, which holds files evosuite did not write ({others[0]})",
                          "move those files away or choose another output directory")


def _check_device(device: str) -> None:
    if check_device(device, cpu_fix="use --device cpu") not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not supported for merging", "use cpu or cuda")


def _sources(plan: MergePlan) -> list[ModelSource]:
    found = [plan.reference] + ([plan.tokenizer] if plan.tokenizer else [])
    for job in plan.jobs:
        found += ([job.base[0]] if job.base else []) + [src for _, src, _ in job.sources]
    return found


def merge_from_config(config: str | Path | Mapping[str, Any] | MergeConfig, out_dir: str | Path, *,
                      dtype: str | None = None, device: str = "cpu", shard_size: int = DEFAULT_SHARD_SIZE,
                      seed: int | None = None, force: bool = False, dry_run: bool = False,
                      progress: Progress | None = None, threads: int | None = None,
                      compute_dtype: str | None = None, strict: bool = False) -> Path | MergePlan:
    """Merge the models of a mergekit YAML config into a Hugging Face model directory ``out_dir``.

    ``dtype`` overrides the config's; ``shard_size`` is in bytes; ``seed`` fixes random methods (default:
    the config's ``seed``, else 0);
    ``force`` replaces an existing ``out_dir``; ``dry_run`` validates everything and returns the
    ``MergePlan`` without writing; ``progress(done, total)`` is called per tensor; ``threads`` sets
    torch's thread count for the merge (restored after); ``compute_dtype`` overrides the dtype the merge
    computes in (default: mergekit's, the recipe's ``dtype`` or the checkpoints'; "float32" is the precise
    path); ``strict`` refuses parameters the method does not use (else they are ignored with a warning).
    Returns the output path.
    """
    cfg = config if isinstance(config, MergeConfig) else load_config(config, strict=strict)
    seed = seed if seed is not None else (cfg.seed or 0)
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not force:
            raise ConfigError(f"output directory {out} already exists", "pass --force to replace it")
        _check_replaceable(out)
    if shard_size <= 0:
        raise ConfigError(f"shard size {shard_size} is not positive", "give a size in bytes, e.g. 5000000000")
    _check_device(device)
    plan = build_plan(cfg, out, dtype=DTYPES.get(dtype, dtype) if dtype else None,
                      compute_dtype=DTYPES.get(compute_dtype, compute_dtype) if compute_dtype else None,
                      shard_size=shard_size)
    for source in _sources(plan):
        if source.path.resolve() == out.resolve() or out.resolve() in source.path.resolve().parents:
            raise ConfigError(f"output directory {out} holds the source model {source.ref!r}",
                              "write the merge to another directory")
    if dry_run:
        return plan
    for warning in plan.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    if plan.vocabulary is not None:
        print(f"vocabulary: {plan.vocabulary.summary}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.evosuite-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    previous_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                _write(plan, tmp, seed=seed, device=device, progress=progress)
        finally:
            for source in {id(s): s for s in _sources(plan)}.values():
                source.close()
        if out.exists():
            old = out.parent / f".{out.name}.evosuite-old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    return out
