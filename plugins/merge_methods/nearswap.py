"""``nearswap``: take the other model's value where it lies near the base's, keep the base's elsewhere."""

from __future__ import annotations

import torch

from evosuite.api import REQUIRED
from evosuite.plugins.merge_methods.base import BuiltinMethod


class NearSwap(BuiltinMethod):
    """NearSwap (mergekit >= 0.0.6), entrywise with a the base and b the other model:
    w = clamp(t / max(|a - b|, 1e-6), 0, 1), result = w * b + (1 - w) * a. Entries closer than ``t`` are
    swapped for b's; farther ones move toward b by t / |a - b|.
    """

    name = "nearswap"
    description = "NearSwap: the other model's values where they are within t of the base's"
    requires_base = True
    source_count = (1, 1)
    global_parameters = {"t": REQUIRED}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        t = float(global_params["t"])
        other = sources[0]
        weight = torch.sub(base, other, out=work.get("nearswap_w", base.numel())).abs_().clamp_(min=1e-6)
        torch.div(t, weight, out=weight).clamp_(0.0, 1.0)  # weight = t / |a - b|, within [0, 1]
        torch.mul(weight, other, out=out)
        weight.neg_().add_(1.0)
        out.addcmul_(weight, base)
