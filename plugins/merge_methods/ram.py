"""``ram`` and ``ramplus_tl``: Reinforced Agent Merging, the mean of the task vectors that carry an entry."""

from __future__ import annotations

import torch

from evosuite.plugins.merge_methods.base import BuiltinMethod


class Ram(BuiltinMethod):
    """RAM (mergekit >= 0.1.5; arXiv 2601.13572), entrywise over the task vectors d_i = model_i - base:
    an entry of d_i counts when |d_i| > ``epsilon`` (others are dropped); c = how many count there.
    Where one counts, its value is taken as is; where several do, their mean; where none, the base's.
    result = base + sum_i d_i [|d_i| > epsilon] / max(c, 1).
    """

    name = "ram"
    description = "RAM: per entry, the mean of the task vectors that change it (more than epsilon)"
    requires_base = True
    takes_deltas = True
    source_count = (1, None)
    global_parameters = {"epsilon": 1e-5}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        n = base.numel()
        epsilon = float(global_params["epsilon"])
        counts = work.get("ram_counts", n).zero_()
        counted = work.get("ram_counted", n, torch.bool)
        for d in sources:
            torch.gt(d.abs(), epsilon, out=counted)
            d.mul_(counted)  # entries within epsilon of the base are dropped
            counts.add_(counted)
        scales = self.unique_scales(sources, counts, global_params, work)
        out.zero_()
        for d, scale in zip(sources, scales):
            if isinstance(scale, float):
                out.add_(d, alpha=scale)
            else:
                out.addcmul_(d, scale)
        out.div_(counts.clamp_(min=1.0))
        out.add_(base)

    def unique_scales(self, deltas, counts, global_params, work) -> list:
        """What each task vector is multiplied by where it alone counts (1 for plain RAM)."""
        return [1.0] * len(deltas)


class RamPlusTL(Ram):
    """RAM+ with tensor-local statistics (mergekit >= 0.1.5): as ``ram``, but where task vector i alone
    changes an entry it is scaled by lambda_i = 1 + r * clamp(rho_i, 0, alpha), rho_i = (entries it shares
    with another counting vector) / max(entries only it changes, epsilon), counted over the tensor: a
    vector that overlaps more is trusted more where it is alone.
    """

    name = "ramplus_tl"
    description = "RAM+ (tensor-local): RAM with unique entries rescaled by each vector's overlap ratio"
    global_parameters = {"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}

    def unique_scales(self, deltas, counts, global_params, work) -> list:
        r, alpha, epsilon = (float(global_params[k]) for k in ("r", "alpha", "epsilon"))
        n = counts.numel()
        unique = torch.eq(counts, 1.0, out=work.get("ram_unique", n, torch.bool))
        scales = []
        for i, d in enumerate(deltas):
            counted = d.abs() > epsilon  # as before: the entries zeroed for it stay uncounted
            only_here = int((counted & unique).sum())
            shared = int(counted.sum()) - only_here
            rho = shared / max(only_here, epsilon)
            lam = 1.0 + r * min(max(rho, 0.0), alpha)
            # Scale the entries it alone counts by lam; the division by c = 1 there leaves them so.
            scale = work.get(f"ram_scale{i}", n)
            scale.fill_(1.0).masked_fill_(unique, lam)
            scales.append(scale)
        return scales
