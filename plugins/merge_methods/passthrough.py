"""``passthrough``: copies (and optionally scales) one model's tensors, for frankenmerges with slices."""

from __future__ import annotations

import torch

from evosuite.plugins.merge_methods.base import BuiltinMethod


class Passthrough(BuiltinMethod):
    """Copies one model's tensor (times its optional ``scale``): frankenmerges built from slices."""

    name = "passthrough"
    description = "Copy tensors unchanged from one model per slice (frankenmerges)"
    source_count = (1, 1)
    global_parameters = {}
    model_parameters = {"scale": 1.0}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        torch.mul(sources[0], float(model_params[0]["scale"]), out=out)
