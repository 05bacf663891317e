"""``arcee_fusion``: take the other model's change only where it is an outlier in importance."""

from __future__ import annotations

import torch

from evosuite.plugins.merge_methods.base import BuiltinMethod

#: Larger tensors are ranked on a random sample (with replacement) of this many scores, as mergekit 0.1.5 does.
SAMPLE_SIZE = 1_000_000
KL_EPS = 1e-8


def importance(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|other - base| times KL(softmax(other) || softmax(base)) of its row (softmax along the last axis;
    a vector is one row), each softmax plus 1e-8."""
    p = torch.softmax(other, dim=-1).add_(KL_EPS)
    q = torch.softmax(base, dim=-1).add_(KL_EPS)
    kl = (p * (p / q).log_()).sum(dim=-1, keepdim=True)
    return (other - base).abs_().mul_(kl)


def fusion_threshold(scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """median + 1.5 * (q3 - q1) of the scores, each quantile the sorted value at floor(q * (n - 1))."""
    flat = scores.reshape(-1)
    if flat.numel() > SAMPLE_SIZE:
        flat = flat[torch.randint(flat.numel(), (SAMPLE_SIZE,), generator=generator, device=flat.device)]
    ordered = torch.sort(flat).values
    last = ordered.numel() - 1

    def quantile(q):
        return ordered[int(q * last)]

    return quantile(0.5) + 1.5 * (quantile(0.75) - quantile(0.25))


class ArceeFusion(BuiltinMethod):
    """Arcee Fusion (mergekit >= 0.1.0), base a and other model b: importance = |b - a| * KL(p_b || p_a)
    per row (p = softmax along the last axis + 1e-8); threshold = median + 1.5 * IQR of the importances
    (quantiles at floor(q * (n - 1)) of the sorted values; over 1e6 scores drawn with replacement for larger
    tensors, from the merge's seeded generator); result = a + (b - a) where importance >= threshold, else a.
    """

    name = "arcee_fusion"
    description = "Arcee Fusion: the other model's changes where their importance is an outlier"
    requires_base = True
    random = True  # only tensors over a million entries draw a sample
    source_count = (1, 1)
    global_parameters = {}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        rows = shape if len(shape) >= 1 else (1,)
        other, ref = sources[0].view(rows), base.view(rows)
        scores = importance(other, ref)
        keep = scores.ge_(fusion_threshold(scores, generator))
        torch.sub(other, ref, out=out.view(rows)).mul_(keep)
        out.add_(base)
