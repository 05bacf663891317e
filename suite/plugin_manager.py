"""The pluggy host: loads plugins from the ``evosuite`` entry-point group and fills the registries.

Built-in plugins are entry points of the ``evosuite`` distribution itself, so they load exactly like a
third-party package's. A plugin that fails to import, or whose hook raises, is reported as one warning
line naming it and left out; ``EVOSUITE_STRICT_PLUGINS=1`` turns that into an error.
``EVOSUITE_LOAD_PLUGINS=a,b`` loads only those third-party plugins (set but empty: none).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from evosuite import hookspecs
from evosuite.errors import PluginError
from evosuite.registry import Registry

ENTRY_POINT_GROUP = "evosuite"
BUILTIN_DISTRIBUTION = "evosuite"

#: Registry kind -> (hook name, label used in messages).
KINDS: dict[str, tuple[str, str]] = {
    "models": ("register_model_adapters", "model adapter"),
    "methods": ("register_merge_methods", "merge method"),
    "spaces": ("register_merge_spaces", "merge space"),
    "benchmarks": ("register_benchmarks", "benchmark"),
    "optimizers": ("register_optimizers", "optimizer"),
    "experiments": ("register_experiments", "experiment"),
}


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str
    builtin: bool
    registers: dict[str, list[str]] = field(default_factory=dict)


def _strict() -> bool:
    return os.environ.get("EVOSUITE_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


class Host:
    """One plugin manager plus the registries built from it."""

    def __init__(self):
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.warnings: list[str] = []
        self._registries: dict[str, Registry] = {}

    # -- loading -------------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        """Report a plugin problem: one line on stderr, or an error in strict mode."""
        if _strict():
            raise PluginError(message, "fix or uninstall the plugin, or unset EVOSUITE_STRICT_PLUGINS")
        self.warnings.append(message)
        print(f"Warning: {message}", file=sys.stderr)

    def load_entry_points(self) -> None:
        wanted = os.environ.get("EVOSUITE_LOAD_PLUGINS")
        wanted_names = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
        entry_points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        if wanted_names:
            known = {ep.name for ep in entry_points} | {ep.dist.name for ep in entry_points if ep.dist}
            for name in sorted(wanted_names - known):
                self.warn(f"EVOSUITE_LOAD_PLUGINS names {name!r}, which is not an installed plugin")
        for ep in entry_points:
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            builtin = dist == BUILTIN_DISTRIBUTION
            if not builtin and wanted_names is not None and ep.name not in wanted_names and dist not in wanted_names:
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not break the tool
                self.warn(f"plugin {ep.name!r} from package {dist} {version} failed to load: "
                          f"{type(exc).__name__}: {exc}")
                continue
            self.info[ep.name] = PluginInfo(ep.name, dist, version, builtin)
            self._check_hook_version(ep.name, module)

    def _check_hook_version(self, name: str, module: Any) -> None:
        declared = getattr(module, "EVOSUITE_HOOKS", None)
        if not declared:
            return
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            ok = str(hookspecs.HOOKS_VERSION) in SpecifierSet(declared)
        except InvalidSpecifier:
            ok = False
        if not ok:
            self.warn(f"plugin {name!r} declares hook API {declared!r} but evosuite provides "
                      f"{hookspecs.HOOKS_VERSION}; it may not work")

    def add_plugin(self, plugin: Any, name: str, *, package: str = "(registered)", version: str = "") -> None:
        """Register a plugin object at run time (tests, notebooks)."""
        self.pm.register(plugin, name=name)
        self.info[name] = PluginInfo(name, package, version, builtin=False)
        self._registries.clear()

    def remove_plugin(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._registries.clear()

    # -- registries ----------------------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        """The registry of one kind (see ``KINDS``), calling every plugin's hook the first time."""
        if kind not in self._registries:
            hook_name, label = KINDS[kind]
            registry = Registry(label)
            for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
                added: list[Any] = []
                try:
                    impl.function(register=added.append)
                except Exception as exc:
                    self.warn(f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}")
                    continue
                for obj in added:
                    registry.add(obj, impl.plugin_name)
                info = self.info.get(impl.plugin_name)
                if info is not None:
                    info.registers[kind] = sorted(getattr(obj, "name", "?") for obj in added)
            self._registries[kind] = registry
        return self._registries[kind]

    def all_registries(self) -> dict[str, Registry]:
        return {kind: self.registry(kind) for kind in KINDS}

    def hooks_of(self, plugin_name: str) -> list[str]:
        plugin = self.pm.get_plugin(plugin_name)
        return sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])

    def plugins(self, *, include_builtin: bool = False) -> list[dict[str, Any]]:
        """What ``evosuite plugins`` shows: one dict per loaded plugin."""
        self.all_registries()
        rows = []
        for name, info in sorted(self.info.items()):
            if info.builtin and not include_builtin:
                continue
            rows.append({
                "name": name,
                "package": info.package,
                "version": info.version,
                "builtin": info.builtin,
                "hooks": self.hooks_of(name),
                "registers": {k: v for k, v in sorted(info.registers.items()) if v},
            })
        return rows


_host: Host | None = None


def get_host() -> Host:
    """The process-wide host, created and loaded on first use."""
    global _host
    if _host is None:
        host = Host()
        _host = host
        try:
            host.load_entry_points()
        except BaseException:
            _host = None
            raise
    return _host


def reset_host() -> None:
    """Forget the loaded plugins (after installing a package, or between tests)."""
    global _host
    _host = None


def get(kind: str, name: str) -> Any:
    """Look up a registered thing, e.g. ``get("benchmarks", "zoo-ja-vqa")``."""
    return get_host().registry(kind).get(name)
