"""How the dashboard shows a job's arguments: decoded without running anything, masked
for secrets, and cut to a bounded length.

Why not ``pickle.loads``: a pickled payload runs whatever code its author chose when
it is loaded, so a dashboard that unpickled jobs would run code from anyone who can
publish one. :class:`SafeUnpickler` never imports: every global a payload names
becomes a stand-in class that records its name and the arguments it was called with,
so ``(func, args, kwargs)`` comes back as plain lists, dicts, strings and numbers
around inert stand-ins, whatever the payload holds. json payloads are plain JSON.

Why a hook: arguments often carry secrets (a password, an API key). The default
masks the values of keywords named like one; ``NAQ_DASHBOARD_REDACT`` names a
``module:function`` taking ``(function, args, kwargs)`` and returning the
``(args, kwargs)`` to show instead.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import reprlib
from collections.abc import Callable
from typing import Any

from naq.errors import ConfigurationError
from naq.plugins import import_object
from naq.redact import MASK
from naq.wire import BadMessage, decode_job

MAX_PAYLOAD = 1024 * 1024
"""Payloads larger than this are not decoded for showing, only sized."""
MAX_SHOWN = 2000
"""Characters of an argument list shown at most."""
SECRET_NAME = re.compile(r"pass|secret|token|key|auth|credential|cookie|session", re.IGNORECASE)

Redactor = Callable[[str, tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]


class Opaque:
    """What a global named in a pickle becomes: its name and how it was called, inert."""

    ref = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None
        self.items: list[Any] = []

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:  # pickle's NEWOBJ calls it
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        inner = ", ".join(
            [*(repr(a) for a in self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        )
        return f"<{self.ref}({inner})>" if inner else f"<{self.ref}>"


class SafeUnpickler(pickle.Unpickler):
    """Loads a pickle's data without importing or calling anything it names."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._made: dict[str, type[Opaque]] = {}

    def find_class(self, module: str, name: str) -> type[Opaque]:
        ref = f"{module}:{name}"
        made = self._made.get(ref)
        if made is None:
            made = self._made[ref] = type("Opaque", (Opaque,), {"ref": ref})
        return made

    def persistent_load(self, pid: Any) -> Opaque:
        return Opaque(pid)


def decode_call(serializer: str, payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments in a job's payload, decoded without running anything (above)."""
    if len(payload) > MAX_PAYLOAD:
        raise BadMessage(f"payload of {len(payload):,} bytes: too large to show")
    try:
        if serializer == "json":
            args, kwargs = json.loads(payload)
        else:
            _, args, kwargs = SafeUnpickler(payload).load()
    except Exception as exc:  # anything a hostile or foreign payload makes the decoder do
        raise BadMessage(f"arguments not readable: {type(exc).__name__}") from None
    if not isinstance(kwargs, dict):
        raise BadMessage("arguments not readable: keywords are not a mapping")
    return tuple(args), {str(k): v for k, v in kwargs.items()}


def show_value(serializer: str, payload: bytes) -> str:
    """A job's result for showing: decoded as its arguments are (nothing run), cut to
    ``MAX_SHOWN``; a line saying why when it cannot be shown."""
    if len(payload) > MAX_PAYLOAD:
        return f"({len(payload):,} bytes: too large to show)"
    try:
        value = json.loads(payload) if serializer == "json" else SafeUnpickler(payload).load()
    except Exception as exc:  # anything a foreign payload makes the decoder do
        return f"(result not readable: {type(exc).__name__})"
    return _cut(_REPR.repr(value))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def mask_secrets(
    function: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The default redaction: keyword values whose name looks like a secret's."""
    return args, {k: MASK if SECRET_NAME.search(k) else v for k, v in kwargs.items()}


def load_redactor(spec: str) -> Redactor:
    """The redaction hook named by ``NAQ_DASHBOARD_REDACT`` (``module:function``), or
    the default; checked at start-up, so a typo fails the command, not a page."""
    if not spec:
        return mask_secrets
    hook = import_object(spec, "dashboard redaction hook")
    if not callable(hook):
        raise ConfigurationError(f"dashboard redaction hook {spec} is not callable")
    return hook


_REPR = reprlib.Repr(maxlevel=4, maxstring=300, maxother=200, maxlist=20, maxdict=20)


def show_call(body: bytes, redactor: Redactor) -> str:
    """``f(args, kw=...)`` for a job message's body, masked and cut to ``MAX_SHOWN``;
    a line saying why when the arguments cannot be shown."""
    try:
        meta, payload = decode_job(body)
        args, kwargs = decode_call(meta.serializer, payload)
        args, kwargs = redactor(meta.function, args, kwargs)
    except BadMessage as exc:
        return f"({exc})"
    except Exception as exc:  # the user's hook failed: show nothing rather than secrets
        return f"(arguments hidden: the redaction hook failed with {type(exc).__name__})"
    parts = [_REPR.repr(a) for a in args] + [f"{k}={_REPR.repr(v)}" for k, v in kwargs.items()]
    return _cut(f"{meta.function}({', '.join(parts)})")
