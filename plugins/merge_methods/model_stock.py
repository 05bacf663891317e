"""``model_stock``: interpolation towards the base by the angle between task vectors."""

from __future__ import annotations

import torch

from evosuite.plugins.merge_methods.base import BuiltinMethod


class ModelStock(BuiltinMethod):
    """Model stock: base + t * mean(task vectors), t = N cos / (1 + (N - 1) cos), cos the mean pairwise
    cosine of the task vectors (per row with ``filter_wise``; norms product clamped to 1e-6). Where
    |1 + (N - 1) cos| < 1e-6 there is no finite t: t = 0 keeps the base there, as mergekit does."""

    #: Below this |1 + (N - 1) cos| the interpolation factor is singular.
    SINGULAR = 1e-6

    name = "model_stock"
    description = "Model stock: interpolate toward the average by the task vectors' angle"
    requires_base = True
    takes_deltas = True
    source_count = (2, None)
    global_parameters = {"filter_wise": False}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        if global_params["filter_wise"] and len(shape) >= 2:
            rows = [d.view(-1, shape[-1]) for d in sources]
        else:
            rows = [d.view(1, -1) for d in sources]
        cosines = []
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                a, b = rows[i], rows[j]
                norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
                cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
        cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
        count = len(rows)
        denominator = 1 + (count - 1) * cos
        singular = denominator.abs() < self.SINGULAR
        t = torch.where(singular, torch.zeros_like(cos), count * cos / denominator.masked_fill(singular, 1.0))
        work.round_(t)
        mean = out.view(rows[0].shape).copy_(rows[0])
        for r in rows[1:]:
            mean.add_(r)
        mean.mul_(t / count)
        out.add_(base)
