"""The on-disk merge engine: a mergekit YAML config in, a Hugging Face model directory out.

It works tensor by tensor: each output tensor is read from the memory-mapped safetensors of its sources,
merged (``merge_tensor``, shared with the in-memory merger), and streamed into an output shard whose
header was computed beforehand, so peak memory is about the largest tensor times the number of
sources, plus scratch of the same size. Nothing is left half-written: the directory is built in a temp
dir beside ``out_dir`` and renamed at the end. This module is the entry point, ``merge_from_config``; the
parts live beside it: reading the models (``sources``), planning the output (``plan``) and writing it
(``writer``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from evosuite.api import Progress
from evosuite.config import check_device
from evosuite.errors import ConfigError
from evosuite.merge.config import DTYPES, MergeConfig, load_config
from evosuite.merge.plan import (
    DEFAULT_SHARD_SIZE,
    TOKENIZER_FILES,
    TORCH_DTYPES,
    MergePlan,
    TensorJob,
    _sources,
    build_plan,
)
from evosuite.merge.sources import FROM_ST, INPUT_EMBEDDINGS, ST_DTYPES, ModelSource
from evosuite.merge.writer import MERGE_MARKER, PROCESSOR_FILES, _check_replaceable, _write

#: The names this module held before it was split (``from evosuite.merge.engine import ...`` keeps working).
__all__ = ["DEFAULT_SHARD_SIZE", "FROM_ST", "INPUT_EMBEDDINGS", "MERGE_MARKER", "PROCESSOR_FILES",
           "RECOMMENDED_THREADS", "ST_DTYPES", "TOKENIZER_FILES", "TORCH_DTYPES", "MergePlan", "ModelSource",
           "TensorJob", "build_plan", "merge_from_config"]

#: Torch threads the command line uses for merging: on the 2-core development machine one thread was
#: faster than two (the work is memory-bound and the cores are shared); see perf/merge_vs_mergekit.py.
RECOMMENDED_THREADS = 1


def _check_device(device: str) -> None:
    if check_device(device, cpu_fix="use --device cpu") not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r} is not supported for merging", "use cpu or cuda")


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
