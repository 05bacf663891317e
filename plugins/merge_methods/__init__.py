"""The built-in merge methods: mergekit's methods, one small class each, registered through the hook.

Every class implements ``MergeMethod.merge`` (one weight, any shape) and, for the engine's fast path,
``merge_flat``: flat float32 inputs, the result written into ``out``, scratch buffers from ``work``.
Methods with ``takes_deltas = True`` receive task vectors (source - base) that they may overwrite;
the others receive the sources themselves and must leave them untouched.

One module per method (``linear``, ``slerp``, ``model_stock``, ``passthrough``, ``nuslerp``, ``multislerp``,
``karcher``, ``sce``, ``nearswap``, ``arcee_fusion``) or family (``ram``: ram, ramplus_tl;
``task_arithmetic``: task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, della,
della_linear: one class with two switches, how each task vector is trimmed and whether a majority sign is
elected). Semantics follow mergekit 0.1.5 (see the docstrings).

The modules need torch, so they are imported when the methods are first registered or named
(``merge_methods.Ties``), not when the plugin is loaded: ``evosuite --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module

from evosuite import hookimpl

#: Class name -> module, in registration order.
METHODS = {
    "LinearMerge": "linear", "SlerpMerge": "slerp", "TaskArithmetic": "task_arithmetic", "Ties": "task_arithmetic",
    "DareLinear": "task_arithmetic", "DareTies": "task_arithmetic", "Breadcrumbs": "task_arithmetic",
    "BreadcrumbsTies": "task_arithmetic", "Della": "task_arithmetic", "DellaLinear": "task_arithmetic",
    "ModelStock": "model_stock", "Passthrough": "passthrough",
    "NuSlerp": "nuslerp", "MultiSlerp": "multislerp", "Karcher": "karcher", "Sce": "sce", "NearSwap": "nearswap",
    "ArceeFusion": "arcee_fusion", "Ram": "ram", "RamPlusTL": "ram",
}


def __getattr__(name: str):
    if name in METHODS:
        return getattr(import_module(f"{__name__}.{METHODS[name]}"), name)
    if name == "BuiltinMethod":
        return import_module(f"{__name__}.base").BuiltinMethod
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_merge_methods(register):
    for name in METHODS:
        register(__getattr__(name)())
