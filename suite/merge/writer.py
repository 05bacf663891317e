"""Writing a planned merge: the output directory's shards, index, configs, tokenizer and model card.

``_write`` computes each tensor of a ``MergePlan`` (its inputs read from the sources, rows aligned by token
when the vocabulary is, parameters resolved, ``merge_tensor`` applied in the compute dtype) and streams it
into a shard whose header was written first; then it writes the reference model's config with the output's
layer count, dtype and vocabulary, the processor and tokenizer files, the chat template, the model card and
the marker that lets ``--force`` later replace only a folder evosuite wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from evosuite.api import Progress
from evosuite.architectures import table
from evosuite.errors import ConfigError
from evosuite.merge.in_memory import merge_tensor
from evosuite.merge.parameters import resolve_parameters
from evosuite.merge.plan import TOKENIZER_FILES, MergePlan, TensorJob, _sources
from evosuite.merge.sources import ST_DTYPES
from evosuite.merge.sparsify import Scratch
from evosuite.merge.tokenizer import OutputVocabulary, align_rows
from evosuite.merge.vocabulary import remap_token_ids

#: Written into every merge output: the files evosuite wrote there (``--force`` replaces nothing else).
MERGE_MARKER = ".evosuite-merge"
#: Files of a model's processor that travel with it (a VLM's image processor and processor settings).
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


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
