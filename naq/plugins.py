"""Finding plugins by name: a built-in short name, an entry point, or ``module:Class``.

Executors (``naq.executors``) and middleware (``naq.middleware``) are named the same
three ways, so one loader serves both and each says the same things when a name is
wrong.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points

from naq.errors import ConfigurationError


def import_object(spec: str, kind: str) -> object:
    """The object ``module:attr`` names; a ConfigurationError saying what is wrong."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"invalid {kind} {spec!r}: expected module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {kind} module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no {attr!r}") from None


def available(group: str, builtins: Mapping[str, str]) -> list[str]:
    """Built-in short names and the names registered under the entry-point ``group``."""
    names = set(builtins)
    names.update(ep.name for ep in entry_points(group=group))
    return sorted(names)


def load_class(
    spec: str, *, kind: str, group: str, base: type, builtins: Mapping[str, str] | None = None
) -> type:
    """The ``base`` subclass ``spec`` names, or a ConfigurationError naming the choices.

    Callers narrow the result to their base class: it is checked to be a subclass here
    (``base`` is often abstract, which a type variable cannot take)."""
    builtins = builtins or {}
    if spec in builtins:
        target = import_object(builtins[spec], kind)
    elif ":" in spec:
        target = import_object(spec, kind)
    else:
        found = list(entry_points(group=group, name=spec))
        if not found:
            raise ConfigurationError(
                f"unknown {kind} {spec!r}; available: "
                f"{', '.join(available(group, builtins)) or 'none installed'} (or module:Class)"
            )
        target = found[0].load()
    if not (isinstance(target, type) and issubclass(target, base)):
        raise ConfigurationError(
            f"{spec!r} is not a naq {base.__name__} ({base.__module__}.{base.__name__})"
        )
    return target
