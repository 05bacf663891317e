"""``model_stock``: interpolation towards the base by the angle between task vectors."""

from __future__ import annotations

import torch

from evosuite.plugins.merge_methods.base import BuiltinMethod


class ModelStock(BuiltinMethod):
    """Model stock: t * mean(models) + (1 - t) * base, t = N cos / (1 + (N - 1) cos), cos the mean pairwise
    cosine of the task vectors (per row with ``filter_wise``; norms product clamped to 1e-6). Where
    |1 + (N - 1) cos| < 1e-6 there is no finite t: t = 0 keeps the base there, as mergekit does.

    The steps are mergekit's, in its order, so that in a narrow compute dtype ``work.round_`` rounds where
    mergekit's arithmetic rounds (the task vectors are formed here, from the models themselves).
    """

    #: Below this |1 + (N - 1) cos| the interpolation factor is singular.
    SINGULAR = 1e-6

    name = "model_stock"
    description = "Model stock: interpolate toward the average by the task vectors' angle"
    requires_base = True
    source_count = (2, None)
    global_parameters = {"filter_wise": False}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        n = base.numel()
        filter_wise = bool(global_params["filter_wise"]) and len(shape) >= 2

        def rows(x):
            return x.view(-1, shape[-1]) if filter_wise else x.view(1, -1)

        w0 = rows(base)
        offsets = [work.round_(torch.sub(rows(w), w0, out=rows(work.get(f"offset{i}", n))))
                   for i, w in enumerate(sources)]
        product = rows(work.get("product", n))
        cosines = []
        for i, a in enumerate(offsets):
            for b in offsets[i + 1:]:
                na = work.round_(torch.linalg.vector_norm(a, dim=-1))
                nb = work.round_(torch.linalg.vector_norm(b, dim=-1))
                norms = work.round_(na * nb)
                dot = work.round_(work.round_(torch.mul(a, b, out=product)).sum(dim=-1))
                cosines.append(work.round_(dot / norms.clamp(min=1e-6)).clamp(-1, 1))
        cos = work.round_(torch.stack(cosines).mean(dim=0)).unsqueeze(-1)
        count = len(offsets)
        denominator = work.round_(work.round_((count - 1) * cos) + 1)
        singular = denominator.abs() < self.SINGULAR
        t = work.round_(work.round_(count * cos) / denominator.masked_fill(singular, 1.0))
        t = torch.where(singular, torch.zeros_like(t), t)
        average = rows(out).copy_(rows(sources[0]))
        for w in sources[1:]:
            work.round_(average.add_(rows(w)))
        work.round_(average.div_(count))
        work.round_(average.mul_(t))
        work.round_(torch.mul(w0, work.round_(1 - t), out=product))
        average.add_(product)
