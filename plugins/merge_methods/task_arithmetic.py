"""The task-arithmetic family: task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs(_ties), della(_linear)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from evosuite.api import REQUIRED
from evosuite.errors import ConfigError
from evosuite.merge.sparsify import breadcrumbs_, della_, magnitude_, random_
from evosuite.plugins.merge_methods.base import BuiltinMethod

SLERP_DOT_THRESHOLD = 0.9995
SLERP_EPS = 1e-8

ELECTION_CHUNK = 1 << 16


class TaskArithmeticFamily(BuiltinMethod):
    """base + lambda * mix(weighted, optionally trimmed task vectors), per tensor (mergekit 0.1.5).

    For each non-base model in config order: delta = model - base; trimmed with its ``density`` when the
    method trims (L1-rescaled when ``rescale``); multiplied by its ``weight``. With sign election the
    majority sign is + where the sum of weighted deltas is >= 0; each delta keeps only entries of that
    sign (zeros never count); mixed = sum of kept entries, divisor = sum of the weights of the kept
    entries (0 -> 1). Without it mixed = sum of weighted deltas, divisor = sum of weights (|.| < 1e-8 -> 1).
    ``normalize`` divides mixed by the divisor; then mixed *= ``lambda``; result = base + mixed.
    """

    requires_base = True
    takes_deltas = True
    #: None, "magnitude", "random", "breadcrumbs" or "della".
    trim: ClassVar[str | None] = None
    sign_election: ClassVar[bool] = False
    default_normalize: ClassVar[bool] = False
    default_rescale: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.random = cls.trim in ("random", "della")
        # DARE and DELLA draw at most one uniform per entry per source, through sparsify.uniform_
        cls.replays_draws = cls.random
        cls.global_parameters = {"normalize": cls.default_normalize, "rescale": cls.default_rescale,
                                 "lambda": 1.0, "int8_mask": False}
        params: dict[str, Any] = {"weight": REQUIRED, "density": 1.0}
        if cls.trim == "breadcrumbs":
            params["gamma"] = 0.01
        if cls.trim == "della":
            params["epsilon"] = 0.15
        cls.model_parameters = params
        cls.search_parameters = ("density", "weight") if cls.trim else ("weight",)

    def _trim(self, delta, params, rescale, generator, work, shape):
        density = float(params["density"])
        if self.trim == "magnitude":
            magnitude_(delta, density, rescale=rescale, work=work)
        elif self.trim == "random":
            random_(delta, density, generator=generator, rescale=rescale, work=work)
        elif self.trim == "breadcrumbs":
            breadcrumbs_(delta, density, float(params["gamma"]), rescale=rescale, work=work)
        elif self.trim == "della":
            epsilon = float(params["epsilon"])
            if density < 1 and (density + epsilon >= 1 or density - epsilon <= 0):
                raise ConfigError(f"della: density {density} +/- epsilon {epsilon} leaves (0, 1)",
                                  "choose epsilon smaller than both density and 1 - density")
            della_(delta, density, epsilon, shape=shape, generator=generator, rescale=rescale, work=work)

    def merge_flat(self, sources, base, model_params, global_params, *, generator, out, work, shape):
        # ``work.round_`` marks where mergekit, computing in a narrow recipe dtype, rounds (nothing in float32).
        n = base.numel()
        rescale = bool(global_params["rescale"])
        weights = [work.round_value(float(p["weight"])) for p in model_params]
        for delta, params, w in zip(sources, model_params, weights):
            if self.trim is not None:
                self._trim(delta, params, rescale, generator, work, shape)
                if rescale:
                    work.round_(delta)
            if w != 1.0:
                work.round_(delta.mul_(w))
        normalize = bool(global_params["normalize"])
        lam = float(global_params["lambda"])
        divisor = 1.0
        if normalize and not self.sign_election:
            divisor = work.round_value(float(torch.tensor(weights, dtype=torch.float32).sum()))
            divisor = 1.0 if abs(divisor) < 1e-8 else divisor
        # The combination is several elementwise passes: run them chunk by chunk so that they stay in cache.
        for start in range(0, n, ELECTION_CHUNK):
            end = min(n, start + ELECTION_CHUNK)
            deltas = [d[start:end] for d in sources]
            if self.sign_election:
                self._elect(deltas, weights, base[start:end], out[start:end], normalize, lam, work, end - start)
            else:
                self._add(deltas, base[start:end], out[start:end], normalize, divisor, lam, work)

    @staticmethod
    def _add(deltas, base, out, normalize, divisor, lam, work):
        out.copy_(deltas[0])
        for delta in deltas[1:]:
            out.add_(delta)
        work.round_(out)
        if normalize:
            work.round_(out.div_(divisor))
        if lam != 1.0:
            work.round_(out.mul_(lam))
        out.add_(base)

    @staticmethod
    def _elect(deltas, weights, base, out, normalize, lam, work, size):
        total = work.get("total", size)
        if len(deltas) > 1:
            torch.add(deltas[0], deltas[1], out=total)
        else:
            total.copy_(deltas[0])
        for delta in deltas[2:]:
            total.add_(delta)
        sign = total.sign_().add_(0.5).sign_()  # majority sign: +1 where the sum is >= 0, else -1
        if normalize:
            keep = work.get("keep_f", size)
            divisor = work.get("divisor", size).zero_()
            out.zero_()
            for delta, w in zip(deltas, weights):
                torch.sign(delta, out=keep).mul_(sign).clamp_(min=0)  # 1 where the delta has the majority sign
                out.addcmul_(delta, keep)
                divisor.add_(keep, alpha=w)
            work.round_(out)
            work.round_(divisor)
            divisor.masked_fill_(torch.eq(divisor, 0, out=work.get("zero", size, torch.bool)), 1.0)
            work.round_(out.div_(divisor))
        else:
            # The kept entries' sum as sign * sum(max(delta * sign, 0)): an entry of the majority sign has
            # delta * sign > 0, the others add 0. Exact multiplications by +-1, so the same sum as adding
            # the kept entries, in fewer passes.
            magnitude = work.get("keep_f", size)
            torch.mul(deltas[0], sign, out=out).clamp_(min=0)
            for delta in deltas[1:]:
                out.add_(torch.mul(delta, sign, out=magnitude).clamp_(min=0))
            work.round_(out.mul_(sign))
        if lam != 1.0:
            work.round_(out.mul_(lam))
        out.add_(base)


class TaskArithmetic(TaskArithmeticFamily):
    name = "task_arithmetic"
    description = "Task arithmetic: base + sum of weighted task vectors"


class Ties(TaskArithmeticFamily):
    name = "ties"
    description = "TIES: magnitude trimming, sign election, disjoint mean"
    trim = "magnitude"
    sign_election = True
    default_normalize = True


class DareTies(TaskArithmeticFamily):
    name = "dare_ties"
    description = "DARE random trimming with rescale, then TIES sign election"
    trim = "random"
    sign_election = True
    default_rescale = True


class DareLinear(TaskArithmeticFamily):
    name = "dare_linear"
    description = "DARE random trimming with rescale, then task arithmetic"
    trim = "random"
    default_rescale = True


class Breadcrumbs(TaskArithmeticFamily):
    name = "breadcrumbs"
    description = "Model breadcrumbs: drop the largest (gamma) and smallest entries of each task vector"
    trim = "breadcrumbs"


class BreadcrumbsTies(TaskArithmeticFamily):
    name = "breadcrumbs_ties"
    description = "Model breadcrumbs trimming with TIES sign election"
    trim = "breadcrumbs"
    sign_election = True


class Della(TaskArithmeticFamily):
    name = "della"
    description = "DELLA: magnitude-ranked random trimming (MagPrune) with TIES sign election"
    trim = "della"
    sign_election = True
    default_normalize = True
    default_rescale = True


class DellaLinear(TaskArithmeticFamily):
    name = "della_linear"
    description = "DELLA MagPrune trimming, then task arithmetic"
    trim = "della"
    default_rescale = True
