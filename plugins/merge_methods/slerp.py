"""``slerp``: spherical interpolation between two models over each flattened tensor."""

from __future__ import annotations

import math

import torch

from evosuite.api import REQUIRED
from evosuite.plugins.merge_methods.base import BuiltinMethod

SLERP_DOT_THRESHOLD = 0.9995
SLERP_EPS = 1e-8

ELECTION_CHUNK = 1 << 16


def _dot(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 14) -> float:
    """Dot product of two flat float32 tensors, float32 within short chunks and float64 across them:
    as accurate as a float64 dot (relative error ~1e-8) without float64 copies of the tensors."""
    return math.fsum(float(torch.dot(a[s:s + chunk], b[s:s + chunk])) for s in range(0, a.numel(), chunk))


class SlerpMerge(BuiltinMethod):
    """Spherical interpolation from the base (t = 0) to the other model (t = 1), over the whole tensor.

    Directions are normalized (norms at most 1e-8 left alone), their dot product clamped to [-1, 1];
    when |dot| > 0.9995 it is plain linear interpolation.
    """

    name = "slerp"
    description = "Spherical linear interpolation between the base model and one other"
    requires_base = True
    source_count = (1, 1)
    global_parameters = {"t": REQUIRED}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        t = float(global_params["t"])
        v0, v1 = base, sources[0]
        n0 = math.sqrt(_dot(v0, v0))
        n1 = math.sqrt(_dot(v1, v1))
        dot = _dot(v0, v1) / ((n0 if n0 > SLERP_EPS else 1.0) * (n1 if n1 > SLERP_EPS else 1.0))
        dot = min(1.0, max(-1.0, dot))
        if abs(dot) > SLERP_DOT_THRESHOLD:
            s0, s1 = 1.0 - t, t
        else:
            theta = math.acos(dot)
            s0 = math.sin((1.0 - t) * theta) / math.sin(theta)
            s1 = math.sin(t * theta) / math.sin(theta)
        torch.mul(v0, s0, out=out)
        out.add_(v1, alpha=s1)
