"""Built-in optimizers: CMA-ES from the ``cma`` package, and random search as a baseline.

Both maximize fitness over [0, 1]^n and draw their random numbers from a private, seeded generator,
so replaying the same ask/tell history reproduces a run exactly (that is how ``evosuite resume`` works)
and nothing else in the process (a metric's bootstrap, say) can change what they ask next.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from evosuite import hookimpl
from evosuite.api import Optimizer
from evosuite.errors import ConfigError


def default_popsize(dimension: int) -> int:
    """CMA-ES's default population, 4 + floor(3 ln n), as in the paper."""
    return 4 + int(3 * math.log(max(dimension, 1)))


def _popsize(given, dimension: int, least: int) -> int:
    """The popsize option, or the default when it is not given (never a silent stand-in for a bad value)."""
    if given is None:
        return default_popsize(dimension)
    if not isinstance(given, int) or isinstance(given, bool) or given < least:
        raise ConfigError(f"optimizer option popsize is {given!r}", f"give an integer >= {least}, or leave it out")
    return given


class CMAES(Optimizer):
    """CMA-ES (``cma``), started at 0.5 with sigma 1/6 as in the paper; bounds by ``cma``'s BoundTransform."""

    name = "cmaes"
    description = "CMA-ES from the cma package (initial mean 0.5, sigma 1/6, population 4 + 3 ln n)"
    options = {"sigma0": 1 / 6, "popsize": None}

    def __init__(self, dimension, *, seed, x0=None, **options):
        super().__init__(dimension, seed=seed, x0=x0, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cma warns at import when matplotlib is missing
            import cma

        rng = np.random.RandomState(seed)
        popsize = _popsize(self.settings["popsize"], dimension, 2)
        sigma0 = self.settings["sigma0"]
        if not isinstance(sigma0, (int, float)) or isinstance(sigma0, bool) or not 0 < sigma0 < math.inf:
            raise ConfigError(f"optimizer option sigma0 is {sigma0!r}", "give a positive number, e.g. 0.1667")
        cma_options = {
            "popsize": popsize,
            "bounds": [0.0, 1.0],
            "randn": rng.randn,  # private generator: see the module docstring
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
            "tolfun": 0,  # the evaluation budget ends the run, not cma's own stopping rules
            "tolx": 0,
            "tolstagnation": 10**9,
        }
        if dimension == 1:
            # cma refuses 1-D problems; a 2-D problem whose second coordinate is ignored behaves the same.
            self._pad = 1
        else:
            self._pad = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._es = cma.CMAEvolutionStrategy(list(self.x0) + [0.5] * self._pad, self.settings["sigma0"],
                                                cma_options)
        self._asked: list[np.ndarray] = []

    @property
    def popsize(self) -> int:
        return self._es.popsize

    def ask(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._asked = self._es.ask()
        return [[float(min(1.0, max(0.0, v))) for v in x[: self.dimension]] for x in self._asked]

    def tell(self, genomes, fitnesses):
        if len(fitnesses) != len(self._asked):
            raise ValueError(f"told {len(fitnesses)} fitnesses for {len(self._asked)} asked genomes")
        # cma minimizes; a failed candidate's -inf becomes a large finite loss it can rank.
        losses = [-f if math.isfinite(f) else 1e30 for f in fitnesses]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._es.tell(self._asked, losses)


class RandomSearch(Optimizer):
    """Uniform random genomes: the baseline any evolved merge should beat."""

    name = "random"
    description = "uniform random search over [0, 1]^n (a baseline)"
    options = {"popsize": None}

    def __init__(self, dimension, *, seed, x0=None, **options):
        super().__init__(dimension, seed=seed, x0=x0, **options)
        self._rng = np.random.RandomState(seed)
        self._popsize = _popsize(self.settings["popsize"], dimension, 1)
        self._first = True

    @property
    def popsize(self) -> int:
        return self._popsize

    def ask(self):
        genomes = [list(map(float, self._rng.rand(self.dimension))) for _ in range(self._popsize)]
        if self._first:
            genomes[0] = list(self.x0)  # the starting point is always scored once
            self._first = False
        return genomes

    def tell(self, genomes, fitnesses):
        pass


@hookimpl
def register_optimizers(register):
    register(CMAES)
    register(RandomSearch)
