"""``linear``: the weighted average of the models (model soups)."""

from __future__ import annotations

import torch

from evosuite.api import REQUIRED
from evosuite.plugins.merge_methods.base import BuiltinMethod


class LinearMerge(BuiltinMethod):
    """Weighted average: sum(weight * tensor) / sum(weight) (without the division if not ``normalize``)."""

    name = "linear"
    description = "Weighted average of the models (model soups)"
    global_parameters = {"normalize": True}
    model_parameters = {"weight": REQUIRED}
    search_parameters = ("weight",)

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        weights = [float(p["weight"]) for p in model_params]
        torch.mul(sources[0], weights[0], out=out)
        for x, w in zip(sources[1:], weights[1:]):
            out.add_(x, alpha=w)
        if global_params["normalize"]:
            out.div_(sum(weights))
