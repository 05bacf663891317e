"""``BuiltinMethod``: what every built-in merge method shares (``merge`` in terms of ``merge_flat``)."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch

from evosuite.api import MergeMethod
from evosuite.errors import ConfigError
from evosuite.merge.sparsify import Scratch


class BuiltinMethod(MergeMethod):
    """Shared plumbing: ``merge`` in terms of ``merge_flat``, and source-count checks."""

    #: True when ``merge_flat`` receives task vectors (source - base) instead of the sources.
    takes_deltas: ClassVar[bool] = False
    #: Allowed number of non-base sources: (minimum, maximum or None).
    source_count: ClassVar[tuple[int, int | None]] = (1, None)

    def check_sources(self, count: int) -> None:
        """Raise ``ConfigError`` when this method cannot merge ``count`` non-base models."""
        low, high = self.source_count
        if count < low or (high is not None and count > high):
            want = f"exactly {low}" if low == high else f"at least {low}" if high is None else f"{low} to {high}"
            extra = " besides the base model" if self.requires_base else ""
            raise ConfigError(f"merge method {self.name!r} needs {want} model(s){extra}, got {count}",
                              "fix the `models` list of the config")

    def merge_flat(self, sources: list[torch.Tensor], base: torch.Tensor | None,
                   model_params: Sequence[Mapping[str, Any]], global_params: Mapping[str, Any], *,
                   generator: torch.Generator | None, out: torch.Tensor, work: Scratch,
                   shape: tuple[int, ...]) -> None:
        raise NotImplementedError

    def merge(self, tensors, base, model_params, global_params, *, generator=None):
        ref = base if base is not None else tensors[0]
        flat_base = base.reshape(-1).to(torch.float32) if base is not None else None
        flat = [t.reshape(-1).to(torch.float32, copy=True) for t in tensors]
        if self.takes_deltas:
            for x in flat:
                x.sub_(flat_base)
        if self.random and generator is None:
            generator = torch.Generator(device=ref.device).manual_seed(0)
        out = torch.empty(ref.numel(), dtype=torch.float32, device=ref.device)
        self.merge_flat(flat, flat_base, model_params, global_params, generator=generator, out=out,
                        work=Scratch(ref.device), shape=tuple(ref.shape))
        return out.view(ref.shape).to(ref.dtype)
