"""Key backends, looked up by `type` in the `keysvc.backends` entry-point group.

The built-in backends register there too (see pyproject.toml), so a separate package can add a
backend by declaring an entry point, without touching keysvc. docs/backends/plugins.md says how;
`memory` is the reference backend and keysvc.testing.backend_contract the contract to pass.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from keysvc.backends import base
from keysvc.backends.base import *  # noqa: F403 - the interface, re-exported for plugins
from keysvc.backends.base import KeyBackend

ENTRY_POINT_GROUP = "keysvc.backends"

__all__ = [*base.__all__, "available_types", "load_backend_class"]


class UnknownBackendType(LookupError):
    @classmethod
    def named(cls, type_name: str) -> UnknownBackendType:
        return cls(f"unknown backend type {type_name!r} (known: {', '.join(available_types())})")


def available_types() -> list[str]:
    """Every registered backend type, the built-in ones and those of installed plugins."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_backend_class(type_name: str) -> type[KeyBackend]:
    """The backend class registered under `type_name`; a clear error when absent or broken
    (for instance when the backend's optional dependencies are not installed)."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == type_name]
    if not matches:
        raise UnknownBackendType.named(type_name)
    try:
        cls = matches[0].load()
    except ImportError as exc:
        raise UnknownBackendType(
            f"backend type {type_name!r} cannot be loaded ({exc}); "
            f"install its extra: pip install 'keysvc[{type_name.split('_')[0]}]'"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, KeyBackend)):
        raise UnknownBackendType(f"entry point {type_name!r} is not a KeyBackend subclass")
    return cls
