"""Name -> object registries filled by plugins, with clear errors for clashes and unknown names."""

from __future__ import annotations

import difflib
from typing import Any, Iterator

from evosuite.errors import PluginError


class Registry:
    """What plugins registered for one hook, keyed by name, remembering which plugin added each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[Any, str]] = {}

    def add(self, obj: Any, plugin: str) -> None:
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} without a name",
                              "give it a non-empty `name` attribute")
        if name in self._entries:
            other = self._entries[name][1]
            raise PluginError(f"{self.kind} {name!r} is registered by both {other!r} and {plugin!r}",
                              f"uninstall one of them or rename its {self.kind}")
        self._entries[name] = (obj, plugin)

    def get(self, name: str) -> Any:
        if not isinstance(name, str):
            raise PluginError(f"{self.kind} {name!r} is not a name", f"give the {self.kind}'s name as a string")
        if name in self._entries:
            return self._entries[name][0]
        available = sorted(self._entries)
        close = difflib.get_close_matches(name, available, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PluginError(f"unknown {self.kind} {name!r}",
                          f"{hint}available: {', '.join(available) or 'none'}")

    def plugin_of(self, name: str) -> str:
        self.get(name)
        return self._entries[name][1]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return ((name, entry[0]) for name, entry in sorted(self._entries.items()))

    def __len__(self) -> int:
        return len(self._entries)
