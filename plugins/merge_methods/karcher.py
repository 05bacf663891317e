"""``karcher``: the Riemannian (Karcher) mean of the models' directions, scaled by their mean norm."""

from __future__ import annotations

import math

import torch

from evosuite.plugins.merge_methods.base import BuiltinMethod


def _gram(vectors: list[torch.Tensor]) -> list[list[float]]:
    """Pairwise dot products, accumulated in float64."""
    gram = [[0.0] * len(vectors) for _ in vectors]
    for i, a in enumerate(vectors):
        for j in range(i, len(vectors)):
            gram[i][j] = gram[j][i] = float((a * vectors[j]).sum(dtype=torch.float64))
    return gram


def karcher_coefficients(gram: list[list[float]], max_iter: int, tol: float) -> list[float]:
    """Coefficients c with result = sum c_i x_i, from the Gram matrix of the models x_i (mergekit >= 0.1.3).

    Every model has weight 1/N. Directions u_i = x_i / |x_i| of the models with |x_i| > tol (weights
    renormalized over them) start from their normalized weighted mean (the first direction if that mean is
    shorter than tol); each iteration moves u along T = sum a_i theta_i / sin(theta_i) (u_i - cos(theta_i) u),
    theta_i = acos(<u, u_i>) (terms with theta_i < tol left out): u <- cos|T| u + sin|T| T / |T|, then
    renormalized; it stops after ``max_iter`` steps or when |T| < tol. The result is u times the mean norm
    of all N models. u stays in the span of the u_i, so it is kept as coefficients over them and every dot
    product comes from the Gram matrix.
    """
    count = len(gram)
    norms = [math.sqrt(max(gram[i][i], 0.0)) for i in range(count)]
    scale = sum(norms) / count
    valid = [i for i in range(count) if norms[i] > tol]
    if not valid:
        return [0.0] * count
    alpha = 1.0 / len(valid)
    # g[a][b] = <u_a, u_b> over the valid directions
    g = [[gram[i][j] / (norms[i] * norms[j]) for j in valid] for i in valid]

    def dots(c):  # <u, u_k> for every valid k
        return [sum(g[k][m] * c[m] for m in range(len(valid))) for k in range(len(valid))]

    def length(c):
        return math.sqrt(max(sum(ck * dk for ck, dk in zip(c, dots(c))), 0.0))

    coef = [alpha] * len(valid)
    start = length(coef)
    coef = [1.0] + [0.0] * (len(valid) - 1) if start < tol else [c / start for c in coef]
    for _ in range(max_iter):
        step = [0.0] * len(valid)
        along_u = 0.0
        for k, d in enumerate(dots(coef)):
            d = min(1.0, max(-1.0, d))
            theta = math.acos(d)
            if theta < tol:
                continue
            factor = alpha * theta / math.sin(theta)
            step[k] += factor
            along_u += factor * d
        step = [s - along_u * c for s, c in zip(step, coef)]
        step_norm = length(step)
        if step_norm < tol:
            break
        coef = [math.cos(step_norm) * c + math.sin(step_norm) / step_norm * s for c, s in zip(coef, step)]
        size = length(coef)
        if size > tol:
            coef = [c / size for c in coef]
    result = [0.0] * count
    for k, i in enumerate(valid):
        result[i] = scale * coef[k] / norms[i]
    return result


class Karcher(BuiltinMethod):
    """Karcher mean (mergekit >= 0.1.3): the equal-weight Riemannian mean of the models on the unit sphere,
    scaled by the mean of their norms, over each whole tensor (see ``karcher_coefficients``).

    mergekit merges every model it is given, the base model included when one is named: list it under
    ``models`` here.
    """

    name = "karcher"
    description = "Karcher mean: Riemannian mean of the models' directions, times their mean norm"
    requires_base = False
    source_count = (1, None)
    global_parameters = {"max_iter": 10, "tol": 1e-5}
    model_parameters = {}

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        if len(sources) == 1:
            out.copy_(sources[0])
            return
        coef = karcher_coefficients(_gram(sources), int(global_params["max_iter"]), float(global_params["tol"]))
        out.zero_()
        for x, c in zip(sources, coef):
            if c != 0.0:
                out.add_(x, alpha=c)
