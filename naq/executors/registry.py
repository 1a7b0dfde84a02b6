"""Finding executors: built-ins by short name, plugins by entry point or ``module:Class``.

Built-ins are a dict of import strings, so they work from a source checkout and a
heavy executor is imported only when chosen. Third-party packages register under
the ``naq.executors`` entry-point group.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from naq.errors import ConfigurationError
from naq.executors.base import Executor

BUILTIN_EXECUTORS = {
    "asyncio": "naq.executors.asyncio:AsyncioExecutor",
    "thread": "naq.executors.thread:ThreadExecutor",
    "process": "naq.executors.process:ProcessExecutor",
    "interpreter": "naq.executors.interpreter:InterpreterExecutor",
}
ENTRY_POINT_GROUP = "naq.executors"


def available_executors() -> list[str]:
    names = set(BUILTIN_EXECUTORS)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _import(spec: str) -> object:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"invalid executor {spec!r}: expected module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import executor module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no {attr!r}") from None


def load_executor(spec: str) -> type[Executor]:
    """The executor class for ``spec``, or a ConfigurationError naming the choices."""
    if spec in BUILTIN_EXECUTORS:
        target = _import(BUILTIN_EXECUTORS[spec])
    elif ":" in spec:
        target = _import(spec)
    else:
        found = list(entry_points(group=ENTRY_POINT_GROUP, name=spec))
        if not found:
            raise ConfigurationError(
                f"unknown executor {spec!r}; available: {', '.join(available_executors())} "
                "(or module:Class)"
            )
        target = found[0].load()
    if not (isinstance(target, type) and issubclass(target, Executor)):
        raise ConfigurationError(f"{spec!r} is not a naq Executor (naq.executors.Executor)")
    return target
