"""``slerp``: spherical interpolation between two models over each flattened tensor."""

from __future__ import annotations

import torch

from evosuite.api import REQUIRED
from evosuite.plugins.merge_methods.base import BuiltinMethod

SLERP_DOT_THRESHOLD = 0.9995
SLERP_EPS = 1e-8
#: mergekit reduces norms and the dot product over chunks of this many entries (then over the chunks).
CHUNK = 1 << 20


class SlerpMerge(BuiltinMethod):
    """Spherical interpolation from the base (t = 0) to the other model (t = 1), over the whole tensor.

    Directions are normalized (norms at most 1e-8 left alone), their dot product clamped to [-1, 1];
    when |dot| > 0.9995 it is plain linear interpolation. Every step is mergekit's float32 arithmetic in
    its order (norms of chunk norms, the dot of the normalized chunks, float32 sines), so the results
    agree to the bit.
    """

    name = "slerp"
    description = "Spherical linear interpolation between the base model and one other"
    requires_base = True
    source_count = (1, 1)
    global_parameters = {"t": REQUIRED}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        t = torch.tensor(float(global_params["t"]), dtype=torch.float32)
        v0, v1 = base, sources[0]
        n = v0.numel()
        starts = range(0, n, CHUNK)
        norm0 = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v0[s:s + CHUNK]) for s in starts]))
        norm1 = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v1[s:s + CHUNK]) for s in starts]))
        norm0 = torch.where(norm0 > SLERP_EPS, norm0, 1)
        norm1 = torch.where(norm1 > SLERP_EPS, norm1, 1)
        x, y = work.get("slerp_x", min(n, CHUNK)), work.get("slerp_y", min(n, CHUNK))
        parts = []
        for s in starts:
            size = min(CHUNK, n - s)
            torch.div(v0[s:s + size], norm0, out=x[:size])
            torch.div(v1[s:s + size], norm1, out=y[:size])
            parts.append(x[:size].mul_(y[:size]).sum())
        dot = torch.stack(parts).sum().clamp(-1, 1)
        if dot.abs() > SLERP_DOT_THRESHOLD:
            coef0, coef1 = 1 - t, t
        else:
            theta = torch.acos(dot)
            coef0 = torch.sin((1 - t) * theta) / torch.sin(theta)
            coef1 = torch.sin(t * theta) / torch.sin(theta)
        torch.mul(v0, coef0, out=out)
        scaled = work.get("slerp_scaled", n)
        out.add_(torch.mul(v1, coef1, out=scaled))
