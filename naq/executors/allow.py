"""Which functions a json-mode supervisor may run: the allow-list, checked twice.

In json mode a job names its function as ``module:qualname`` and the worker imports
it. JSON arguments protect nothing when the sender also picks the function: anyone
who can publish on a job subject could name ``os:system`` or ``builtins:exec``. So a
json-mode supervisor runs only functions of modules it was told it may run:

* ``allow`` (``--allow``, ``NAQ_ALLOW``, comma-separated): module names, each also
  allowing its submodules (``tasks`` allows ``tasks.mail``), or patterns
  (``reports.*``); the ``preload`` modules count as allowed too;
* none given: the modules that live directly in the supervisor's working directory
  (``tasks.py`` beside ``naq worker``), never the standard library, naq itself, or a
  module found anywhere else (an installed package, or a name already imported from
  elsewhere even if the directory has a file of that name).

The check is made twice. The supervisor calls :meth:`AllowList.check` before
dispatch; it reads the reference and looks modules up on disk without importing
anything, so a refused job's module never runs a line. The executor calls
:meth:`AllowList.resolve` where the function is imported, and refuses what only the
attribute walk shows: a step through a module object (``tasks:os.system`` when
``tasks`` imports ``os``) or a target whose ``__module__`` is not allowed
(``tasks:system`` after ``from os import system``).

Pickle mode has no allow-list: unpickling runs code by design, so there the
protection is who may publish jobs (and job signing), not which function is named.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import Any

NEVER_BY_DEFAULT = frozenset({"naq", "nas_queue", "__main__"})
"""Top-level names the working-directory default never allows, beside the standard
library: naq's own modules, and the supervisor's script."""

_rooted: set[tuple[str, str]] = set()
"""``(root, top-level name)`` pairs found to live in ``root``: once a module is known to
be the working directory's own, the supervisor need not look it up for every job."""


class Refused(LookupError):
    """The function may not run here; the message says why (it goes to the failed stream)."""


def split_reference(ref: str) -> tuple[str, tuple[str, ...]]:
    """``module:qualname`` -> ``(module, qualname parts)``, refusing what no plain
    function reference looks like: a relative module (``.tasks``), anything that is not
    dotted identifiers, and dunder parts (``add.__globals__``), which lead from a
    function to everything its module can reach."""
    module, sep, qualname = ref.partition(":") if isinstance(ref, str) else ("", "", "")
    if not sep:
        raise Refused(f"function reference {ref!r} is not 'module:qualname'")
    for kind, path in (("module", module), ("qualname", qualname)):
        parts = path.split(".")
        if not all(part.isidentifier() for part in parts):
            raise Refused(
                f"function reference {ref!r}: the {kind} must be dotted identifiers "
                "(no relative import, no '<locals>')"
            )
        if any(part.startswith("__") and part.endswith("__") for part in parts):
            raise Refused(f"function reference {ref!r}: dunder names are not allowed")
    return module, tuple(qualname.split("."))


def _matches(pattern: str, module: str) -> bool:
    if "*" in pattern:
        return fnmatchcase(module, pattern)
    return module == pattern or module.startswith(pattern + ".")


def _location(spec: ModuleSpec) -> str | None:
    """Where a module lives: a package's directory, or a module's file."""
    if spec.submodule_search_locations is not None:
        found = list(spec.submodule_search_locations)
        return os.path.normpath(found[0]) if len(found) == 1 else None
    if spec.origin is not None and spec.has_location:
        return os.path.normpath(spec.origin)
    return None


def _lives_in(root: str, top: str) -> bool:
    """True when the top-level module ``top`` is a file or package directly in ``root``
    and is what ``import top`` gives (or gave) this process: a name the standard
    library or naq owns never is, nor one already imported from somewhere else, nor
    one an earlier ``sys.path`` entry would shadow."""
    if (root, top) in _rooted:
        return True
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return False
    if top in NEVER_BY_DEFAULT:
        return False
    loaded = sys.modules.get(top)
    if loaded is not None:
        spec = getattr(loaded, "__spec__", None)
        where = _location(spec) if isinstance(spec, ModuleSpec) else None
    else:
        local = PathFinder.find_spec(top, [root])
        where = _location(local) if local is not None else None
        try:
            imported = importlib.util.find_spec(top)  # a top-level name: imports nothing
        except (ImportError, ValueError):
            return False
        if where is None or imported is None or _location(imported) != where:
            return False
    if where is None or os.path.dirname(where) != root:
        return False
    _rooted.add((root, top))
    return True


@dataclass(frozen=True, slots=True)
class AllowList:
    """The modules whose functions a json-mode supervisor runs.

    ``patterns``: module names or ``fnmatch`` patterns. ``root``: when no pattern was
    configured, the directory whose own modules are allowed (the working directory);
    ``None`` otherwise. Plain values, so the list travels inside a ``Call`` to child
    processes and subinterpreters.
    """

    patterns: tuple[str, ...] = ()
    root: str | None = None

    @classmethod
    def configured(cls, allow: tuple[str, ...], preload: tuple[str, ...], cwd: str) -> AllowList:
        """The list for ``--allow`` (``allow``) and ``--preload`` (``preload``): the
        working directory's modules only when ``allow`` is empty."""
        root = None if allow else os.path.normpath(os.path.abspath(cwd))
        return cls(tuple(dict.fromkeys((*allow, *preload))), root)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> AllowList:
        return cls(tuple(str(p) for p in data.get("patterns", ())), data.get("root"))

    def allows_module(self, module: str) -> bool:
        """Whether functions of ``module`` may run here (nothing is imported)."""
        if any(_matches(pattern, module) for pattern in self.patterns):
            return True
        return self.root is not None and _lives_in(self.root, module.partition(".")[0])

    def check(self, ref: str) -> tuple[str, tuple[str, ...]]:
        """``ref`` split into module and qualname parts if it may run; :class:`Refused`
        otherwise. Imports nothing: the supervisor's check before dispatch."""
        module, parts = split_reference(ref)
        if not self.allows_module(module):
            raise Refused(f"{ref}: module {module!r} is not allowed here ({self.describe()})")
        return module, parts

    def resolve(self, ref: str) -> Callable[..., Any]:
        """Import and return the function ``ref`` names, checking each step of the way:
        the executor's check, where the job runs. Raises :class:`Refused` or
        ``LookupError``."""
        module, parts = self.check(ref)
        try:
            target: Any = importlib.import_module(module)
        except ImportError as exc:
            raise LookupError(f"cannot import module {module!r} for {ref}: {exc}") from exc
        for part in parts:
            try:
                target = getattr(target, part)
            except AttributeError:
                raise LookupError(
                    f"module {module!r} has no function {'.'.join(parts)!r}"
                ) from None
            if isinstance(target, ModuleType):
                raise Refused(f"{ref}: the name {part!r} is a module, not a function of {module!r}")
        owner = getattr(target, "__module__", None)
        if not isinstance(owner, str) or not self.allows_module(owner):
            raise Refused(f"{ref}: it is defined in {owner!r}, which is not allowed here")
        if not callable(target):
            raise LookupError(f"{ref} is not callable")
        return target  # type: ignore[no-any-return]

    def describe(self) -> str:
        """What is allowed, for the reason a refused job carries (no paths: the failed
        stream is readable by more people than the supervisor's host)."""
        if self.root is None:
            return f"json mode runs only the allowed modules: {', '.join(self.patterns)}"
        extra = f", and {', '.join(self.patterns)}" if self.patterns else ""
        return (
            "json mode runs only modules of the supervisor's working directory"
            f"{extra}, never the standard library or installed packages; --allow / "
            "NAQ_ALLOW names others"
        )
