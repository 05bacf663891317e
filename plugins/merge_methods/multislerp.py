"""``multislerp``: the weighted spherical mean of any number of models (barycentric slerp)."""

from __future__ import annotations

import math

import torch

from evosuite.api import REQUIRED
from evosuite.errors import ConfigError, ModelError
from evosuite.plugins.merge_methods.base import BuiltinMethod


def _norm(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x, dtype=torch.float64))


class MultiSlerp(BuiltinMethod):
    """Multi-SLERP (mergekit >= 0.0.6): with x_i the flattened models (minus the base when one is given),
    w_i their weights (divided by their sum when ``normalize_weights``), u_i = x_i / (|x_i| + eps) and
    m = sum w_i u_i, the result is m / |m| * sum w_i |x_i| (plus the base).

    mergekit writes it as a projection onto the tangent space at m / |m| and back through the exponential
    map; the tangent vector sum w_i (u_i - <u_i, m/|m|> m/|m|) is exactly zero (sum w_i <u_i, m/|m|> = |m|),
    so the map returns m / |m| * cos(eps) (the tangent's norm is taken as 0 + eps). When |m| < eps, two
    models are averaged linearly (w_0 x_0 + w_1 x_1) and more are refused. One model is returned as it is.
    The base is optional (``base_optional``).
    """

    name = "multislerp"
    description = "Multi-SLERP: weighted spherical mean of the models (optional base)"
    requires_base = False
    base_optional = True
    source_count = (1, None)
    global_parameters = {"normalize_weights": True, "eps": 1e-8}
    model_parameters = {"weight": REQUIRED}
    search_parameters = ("weight",)

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        if len(sources) == 1:
            out.copy_(sources[0])
            return
        eps = float(global_params["eps"])
        weights = torch.tensor([float(p["weight"]) for p in model_params], dtype=torch.float32)
        if global_params["normalize_weights"]:
            if float(weights.sum()) == 0:
                raise ConfigError("multislerp: the models' weights sum to 0, so they cannot be normalized",
                                  "give weights with a non-zero sum, or set normalize_weights: false")
            weights = weights / weights.sum()
        weights = weights.tolist()
        vectors = sources
        if base is not None:  # task vectors, in scratch buffers: the sources stay untouched
            vectors = [torch.sub(x, base, out=work.get(f"multislerp{i}", x.numel())) for i, x in enumerate(sources)]
        norms = [_norm(x) for x in vectors]
        out.zero_()
        for x, w, n in zip(vectors, weights, norms):
            if n + eps > 0:  # a zero vector with eps 0 has no direction (mergekit: NaN)
                out.add_(x, alpha=w / (n + eps))
        mean_norm = _norm(out)
        if mean_norm < eps:
            if len(vectors) != 2:
                raise ModelError(f"multislerp: the weighted mean of the {len(vectors)} models' directions is zero "
                                 "(opposite models whose weights balance out)",
                                 "change the weights, or merge two models at a time")
            torch.mul(vectors[0], weights[0], out=out)
            out.add_(vectors[1], alpha=weights[1])
        else:
            out.mul_(sum(w * n for w, n in zip(weights, norms)) * math.cos(eps) / mean_norm)
        if base is not None:
            out.add_(base)
