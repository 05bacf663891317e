"""The hook specifications: the whole extension API of evosuite, in one place.

Every hook but ``register_commands`` has the same shape, borrowed from ``llm``: evosuite calls the hook
with a ``register`` callback, and the plugin calls ``register(thing)`` once per thing it adds. A
plugin may add many things, or none. Each thing has a unique ``name``; two plugins registering the same
name is an error that names both. Built-in plugins use exactly these hooks, registered through the
``evosuite`` entry-point group like any third-party package.

The objects a plugin registers follow the base classes in ``evosuite.api``; their docstrings say what
each method receives and returns.
"""

from __future__ import annotations

import pluggy

#: Version of this hook API. A plugin may declare the range it supports with a module-level
#: ``EVOSUITE_HOOKS = ">=1,<2"``; a mismatch produces a warning naming the plugin.
HOOKS_VERSION = 1

hookspec = pluggy.HookspecMarker("evosuite")
hookimpl = pluggy.HookimplMarker("evosuite")


@hookspec
def register_model_adapters(register):
    """Add model adapters: ``register(adapter)`` for each ``evosuite.api.ModelAdapter`` instance.

    Called once, when the registry of model adapters is first needed. An adapter loads a family of
    models (causal LMs, LLaVA-style VLMs, OpenCLIP...) from a path or hub id, says which of their
    parameters are mergeable and which layer each belongs to, and runs them for benchmarks.
    """


@hookspec
def register_merge_methods(register):
    """Add tensor-level merge methods: ``register(method)`` for each ``evosuite.api.MergeMethod``.

    Called once, when the registry of merge methods is first needed (``evosuite merge``, a merge
    space). A method declares its global and per-model parameters and computes one merged tensor
    from the tensors of the sources (and base model, when it needs one).
    """


@hookspec
def register_merge_spaces(register):
    """Add merge spaces: ``register(space_class)`` for each ``evosuite.api.MergeSpace`` subclass.

    Called once, when the registry of merge spaces is first needed (``evosuite run``). A space turns
    a genome (a vector of floats in [0, 1]) into a candidate model built from loaded sources.
    """


@hookspec
def register_benchmarks(register):
    """Add benchmarks: ``register(benchmark_class)`` for each ``evosuite.api.Benchmark`` subclass.

    Called once, when the registry of benchmarks is first needed (``evosuite run``, ``eval``,
    ``score``). A benchmark loads its items, prompts a candidate model and scores its outputs.
    """


@hookspec
def register_optimizers(register):
    """Add black-box optimizers: ``register(optimizer_class)`` for each ``evosuite.api.Optimizer``.

    Called once, when the registry of optimizers is first needed (``evosuite run``). An optimizer
    follows the ask/tell protocol over genomes in [0, 1]^n and maximizes fitness.
    """


@hookspec
def register_experiments(register):
    """Add ready-made experiments: ``register(experiment)`` for each ``evosuite.api.Experiment``.

    Called when ``evosuite run --plugin NAME`` looks up its default experiment NAME. An experiment
    returns a complete run configuration (sources, benchmark, space, optimizer, budget) and may
    prepare what it needs first (for example, build the tiny zoo).
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``evosuite`` command line: ``cli`` is the top-level ``click.Group``.

    Called once, when the command line starts. Use ``@cli.command()`` to add a command.
    """
