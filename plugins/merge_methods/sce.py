"""``sce``: Select, Calculate, Erase: task vectors kept where the models disagree most, weighted by energy."""

from __future__ import annotations

import torch

from evosuite.plugins.merge_methods.base import BuiltinMethod


def variance_mask_(deltas: list[torch.Tensor], density: float, work) -> None:
    """Zero every entry of every task vector outside the top ``density`` share (of the entries whose
    variance is non-zero) by variance across the models, in place (mergekit's ``select_topk``)."""
    if density >= 1:
        return
    n = deltas[0].numel()
    if density <= 0:
        for d in deltas:
            d.zero_()
        return
    mean = work.get("sce_mean", n).zero_()
    for d in deltas:
        mean.add_(d)
    mean.div_(len(deltas))
    var = work.get("sce_var", n).zero_()
    diff = work.get("sce_diff", n)
    for d in deltas:
        torch.sub(d, mean, out=diff)
        var.addcmul_(diff, diff)
    var.div_(len(deltas))  # population variance (divide by N)
    nonzero = torch.count_nonzero(var)
    # k as mergekit takes it: a tensor count times a float, in float32, truncated.
    k = int(nonzero * density)
    keep = work.get("sce_keep", n).zero_()
    if k > 0:
        keep[torch.topk(var, k, largest=True, sorted=False).indices] = 1.0
    for d in deltas:
        d.mul_(keep)


class Sce(BuiltinMethod):
    """SCE (mergekit >= 0.0.6; arXiv 2408.07990), per tensor, over the task vectors d_i = model_i - base:

    1. select: with ``select_topk`` < 1, keep only the entries whose variance across the d_i is among the
       top int(select_topk * (count of non-zero variances)); 0 or less keeps nothing.
    2. calculate: w_i = mean(d_i^2) / sum_j mean(d_j^2) (1/N each when that sum is below 1e-6).
    3. erase: the majority sign is + where sum_i d_i >= 0; entries of another sign (zeros too) are dropped.
    result = base + sum_i w_i kept_i d_i / max(sum_i w_i kept_i, 1e-6). ``int8_mask`` only sets the dtype
    of mergekit's masks and changes no value.
    """

    name = "sce"
    description = "SCE: variance-selected task vectors, energy weights, sign consensus"
    requires_base = True
    takes_deltas = True
    source_count = (1, None)
    global_parameters = {"select_topk": 1.0, "int8_mask": False}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        n = base.numel()
        variance_mask_(sources, float(global_params["select_topk"]), work)
        energies = [float((d * d).sum(dtype=torch.float64)) / max(n, 1) for d in sources]
        total = sum(energies)
        weights = [1.0 / len(sources)] * len(sources) if abs(total) < 1e-6 else [e / total for e in energies]
        majority = work.get("sce_sign", n).zero_()
        for d in sources:
            majority.add_(d)
        majority.sign_().add_(0.5).sign_()  # +1 where the sum is >= 0, else -1
        kept = work.get("sce_kept", n)
        divisor = work.get("sce_divisor", n).zero_()
        out.zero_()
        for d, w in zip(sources, weights):
            torch.sign(d, out=kept).mul_(majority).clamp_(min=0)  # 1 where d has the majority sign
            divisor.add_(kept, alpha=w)
            out.addcmul_(d, kept, value=w)
        out.div_(divisor.clamp_(min=1e-6))
        out.add_(base)
