"""Finding executors: built-ins by short name, plugins by entry point or ``module:Class``.

Built-ins are a dict of import strings, so they work from a source checkout and a
heavy executor is imported only when chosen. Third-party packages register under
the ``naq.executors`` entry-point group.
"""

from __future__ import annotations

from typing import cast

from naq.executors.base import Executor
from naq.plugins import available, load_class

BUILTIN_EXECUTORS = {
    "asyncio": "naq.executors.asyncio:AsyncioExecutor",
    "thread": "naq.executors.thread:ThreadExecutor",
    "process": "naq.executors.process:ProcessExecutor",
    "interpreter": "naq.executors.interpreter:InterpreterExecutor",
}
ENTRY_POINT_GROUP = "naq.executors"


def available_executors() -> list[str]:
    return available(ENTRY_POINT_GROUP, BUILTIN_EXECUTORS)


def load_executor(spec: str) -> type[Executor]:
    """The executor class for ``spec``, or a ConfigurationError naming the choices."""
    found = load_class(
        spec, kind="executor", group=ENTRY_POINT_GROUP, base=Executor, builtins=BUILTIN_EXECUTORS
    )
    return cast(type[Executor], found)
