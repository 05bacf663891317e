"""Reading a model to merge: a model directory (or ``MODEL+LORA``) opened lazily from its safetensors headers.

``ModelSource`` knows each tensor's file, shape, dtype and byte offset without loading any weights, finds the
model's layer layout in the architecture table and its vocabulary rows, and reads one tensor at a time
(memory-mapped, or straight into a caller's buffer), with a LoRA adapter applied as it is read. The
safetensors dtype codes (both ways) live here too.
"""

from __future__ import annotations

import functools
import json
import mmap
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from evosuite.architectures import Layout, resolve
from evosuite.errors import ModelError
from evosuite.merge.lora import load_adapter, resolve_adapter_dir, split_lora_ref

#: Names of input embeddings, to find a model's vocabulary rows when its config has no ``vocab_size``.
INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight",
                    "tok_embeddings.weight")
ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
FROM_ST = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


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
