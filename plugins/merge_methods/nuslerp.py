"""``nuslerp``: spherical interpolation of two models, per row, per column or over the whole tensor."""

from __future__ import annotations

import torch

from evosuite.api import REQUIRED
from evosuite.plugins.merge_methods.base import BuiltinMethod

#: Norms are clamped to this before directions are formed (a zero vector then has cosine 0 with anything).
NORM_FLOOR = 1e-7
#: At or below this |sin(theta)| the two vectors count as colinear and are interpolated linearly.
COLINEAR_SIN = 1e-8


def slerp_coefficients(v0: torch.Tensor, v1: torch.Tensor, t: float, dim: int | None) -> tuple[torch.Tensor, ...]:
    """(c0, c1) with slerp(v0, v1) = c0 * v0 + c1 * v1, per vector along ``dim`` (None: the whole tensor),
    shaped to broadcast against the inputs. Accumulated in float64, applied in float32."""
    dims = None if dim is None else (dim,)
    keep = dim is not None

    def reduce(x):
        return x.sum(dim=dims, keepdim=keep, dtype=torch.float64) if dims else x.sum(dtype=torch.float64)

    n0 = reduce(v0 * v0).sqrt().clamp(min=NORM_FLOOR)
    n1 = reduce(v1 * v1).sqrt().clamp(min=NORM_FLOOR)
    cos = (reduce(v0 * v1) / (n0 * n1)).clamp(-1.0, 1.0)
    colinear = 1.0 - cos * cos <= COLINEAR_SIN ** 2
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    safe = torch.where(colinear, torch.ones_like(sin), sin)
    c0 = torch.where(colinear, torch.full_like(sin, 1.0 - t), torch.sin((1.0 - t) * theta) / safe)
    c1 = torch.where(colinear, torch.full_like(sin, t), torch.sin(t * theta) / safe)
    return c0.to(v0.dtype), c1.to(v0.dtype)


class NuSlerp(BuiltinMethod):
    """NuSLERP (mergekit >= 0.0.6): slerp between two models with t = weight_2 / (weight_1 + weight_2)
    (0.5 when the weights sum to less than 1e-6 in absolute value).

    ``nuslerp_flatten`` (default true) interpolates the flattened tensor as one vector; otherwise each row
    (vectors along the last axis) is interpolated apart, or each column (vectors along the first axis) with
    ``nuslerp_row_wise``. Directions are v / max(|v|, 1e-7); where |sin(theta)| <= 1e-8 the interpolation is
    linear (mergekit 0.1.5's test: 1 - cos^2 <= 1e-16). The base is optional (``base_optional``): with
    one, the two task vectors (model - base) are interpolated and the result added to the base.
    """

    name = "nuslerp"
    description = "NuSLERP: slerp of two models by their weights, per row, per column or whole (optional base)"
    requires_base = False
    base_optional = True
    source_count = (2, 2)
    global_parameters = {"nuslerp_flatten": True, "nuslerp_row_wise": False}
    model_parameters = {"weight": REQUIRED}
    search_parameters = ("weight",)

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        w0, w1 = (float(p["weight"]) for p in model_params)
        t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
        v0, v1 = sources
        if base is not None:
            v0 = torch.sub(v0, base, out=work.get("nuslerp0", v0.numel()))
            v1 = torch.sub(v1, base, out=work.get("nuslerp1", v1.numel()))
        if global_params["nuslerp_flatten"] or len(shape) < 2:
            dim = None
        else:
            v0, v1 = v0.view(shape), v1.view(shape)
            dim = 0 if global_params["nuslerp_row_wise"] else -1
        c0, c1 = slerp_coefficients(v0, v1, t, dim)
        result = out.view(v0.shape)
        torch.mul(v0, c0, out=result)
        result.addcmul_(v1, c1)
        if base is not None:
            out.add_(base)
