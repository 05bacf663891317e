"""Merging sources that are already in memory, into preallocated tensors: what the evolver calls.

``TaskVectorMerger`` is built once from the base and source state dicts and a merge method; it computes
the task vectors (source - base, float32) once. Each ``merge_into`` call then writes the merged value of
every tensor into the caller's tensors in place, reusing the same scratch buffers: a candidate costs
no disk I/O and no new allocation of model-sized memory. The on-disk engine runs the very same
per-tensor code (``merge_tensor``), so both give the same tensors for the same parameters and seed.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping, Sequence

import torch

from evosuite.api import MergeMethod
from evosuite.errors import ModelError
from evosuite.merge.sparsify import Scratch

#: ``params_for(tensor_name) -> (per-source parameter dicts in source order, global parameter dict)``.
ParamsFor = Callable[[str], tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]]]


def tensor_seed(seed: int, name: str) -> int:
    """The seed of one tensor's generator: depends on the run seed and the tensor name only, so a random
    method gives the same result whatever the order, the thread count, on disk or in memory."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


def merge_tensor(method: MergeMethod, name: str, base: torch.Tensor | None, sources: list[torch.Tensor],
                 model_params: Sequence[Mapping[str, Any]], global_params: Mapping[str, Any], *,
                 seed: int, out: torch.Tensor, work: Scratch, shape: tuple[int, ...]) -> torch.Tensor:
    """Merge one tensor into flat float32 ``out``.

    ``base`` and ``sources`` are flat float32; for a method with ``takes_deltas`` the sources are task
    vectors the method may overwrite. Methods without ``merge_flat`` (third-party plugins) go through
    ``MergeMethod.merge`` with reshaped, full-valued tensors.
    """
    generator = None
    if method.random:
        generator = torch.Generator(device=out.device).manual_seed(tensor_seed(seed, name))
    merge_flat = getattr(method, "merge_flat", None)
    if merge_flat is not None:
        merge_flat(sources, base, model_params, global_params, generator=generator, out=out, work=work,
                   shape=shape)
        return out
    full = [s.view(shape) for s in sources]
    result = method.merge(full, base.view(shape) if base is not None else None, model_params, global_params,
                          generator=generator)
    out.copy_(result.reshape(-1))
    return out


class TaskVectorMerger:
    """Reusable in-memory merger over fixed sources.

    ``base``: name -> tensor of the base model (None for methods without one); ``sources``: one
    name -> tensor mapping per merged model, in the order of the parameter lists; ``names``: the tensors
    to merge (default: all of the base's, or the first source's). Task vectors are kept in float32 on
    ``device``.
    """

    def __init__(self, base: Mapping[str, torch.Tensor] | None, sources: Sequence[Mapping[str, torch.Tensor]],
                 method: MergeMethod, *, names: Sequence[str] | None = None, device: str | torch.device = "cpu"):
        if method.requires_base and base is None:
            raise ModelError(f"merge method {method.name!r} needs a base model", "pass the base state dict")
        self.method = method
        self.device = torch.device(device)
        reference = base if base is not None else sources[0]
        self.names = list(names) if names is not None else list(reference)
        self.takes_deltas = bool(getattr(method, "takes_deltas", False))
        self.work = Scratch(self.device)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.base: dict[str, torch.Tensor] = {}
        self.inputs: list[dict[str, torch.Tensor]] = [{} for _ in sources]
        for name in self.names:
            ref = reference[name]
            self.shapes[name] = tuple(ref.shape)
            flat_base = None
            if base is not None:
                flat_base = base[name].detach().to(self.device, torch.float32).reshape(-1)
                self.base[name] = flat_base
            for i, src in enumerate(sources):
                if name not in src:
                    raise ModelError(f"tensor {name} is missing from source {i}", "merge models of one architecture")
                x = src[name].detach()
                if tuple(x.shape) != self.shapes[name]:
                    raise ModelError(f"tensor {name} has shape {tuple(x.shape)} in source {i} but "
                                     f"{self.shapes[name]} in the reference", "merge models of one architecture")
                x = x.to(self.device, torch.float32).reshape(-1)
                if self.takes_deltas:
                    x = x - flat_base  # computed once, for every candidate
                self.inputs[i][name] = x
        self._largest = max((int(torch.Size(s).numel()) for s in self.shapes.values()), default=0)

    def merge_into(self, out: Mapping[str, torch.Tensor], params_for: ParamsFor, *, seed: int = 0) -> None:
        """Write the merged value of every tensor into ``out[name]`` (any dtype and device), in place."""
        n_sources = len(self.inputs)
        for name in self.names:
            shape = self.shapes[name]
            numel = self.inputs[0][name].numel()
            model_params, global_params = params_for(name)
            if self.takes_deltas:  # the method overwrites its inputs: hand it scratch copies
                sources = [self.work.get(f"src{i}", numel).copy_(self.inputs[i][name]) for i in range(n_sources)]
            else:
                sources = [self.inputs[i][name] for i in range(n_sources)]
            result = merge_tensor(self.method, name, self.base.get(name), sources, model_params, global_params,
                                  seed=seed, out=self.work.get("out", numel), work=self.work, shape=shape)
            out[name].copy_(result.view(shape))


def merge_once(out: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor] | None,
               sources: Sequence[Mapping[str, torch.Tensor]], method: MergeMethod, params_for: ParamsFor, *,
               seed: int = 0) -> None:
    """One merge written into ``out``, tensor by tensor, keeping no task vectors: for a fixed recipe scored
    once. Same per-tensor code and seeds as ``TaskVectorMerger``, so the same parameters give the same tensors."""
    for name, target in out.items():
        one_base = {name: base[name]} if base is not None else None
        merger = TaskVectorMerger(one_base, [{name: s[name]} for s in sources], method, names=[name],
                                  device=target.device)
        merger.merge_into({name: target}, params_for, seed=seed)
