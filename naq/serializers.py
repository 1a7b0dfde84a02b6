"""How a call's function, arguments and result become bytes, and back.

Two serializers, chosen by ``NAQ_JOB_SERIALIZER``:

* ``pickle`` (default): cloudpickle, so lambdas, closures and arbitrary objects work.
  Unpickling runs code: only for producers you trust.
* ``json``: the function travels as its import path, the arguments and the result as
  JSON. A worker in json mode never unpickles anything, and runs only functions of
  the modules it allows (``naq.executors.allow``), so a hostile producer can at most
  call one of those with JSON arguments.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import json
import pickle
from collections.abc import Callable
from typing import Any, Protocol

import cloudpickle

from naq.errors import SerializationError

FuncArgs = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def function_ref(func: Callable[..., Any]) -> str:
    """``module:qualname`` of ``func``: its name in job metadata and in json mode."""
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if qualname is None:
        qualname = type(func).__qualname__
    return f"{module}:{qualname}"


@functools.lru_cache(maxsize=4096)
def _describe(func: Callable[..., Any]) -> tuple[str, bool]:
    return function_ref(func), inspect.iscoroutinefunction(func)


def describe(func: Callable[..., Any]) -> tuple[str, bool]:
    """``(module:qualname, is coroutine function)``, cached: every enqueue asks."""
    try:
        return _describe(func)
    except TypeError:  # unhashable callable
        return function_ref(func), inspect.iscoroutinefunction(func)


def resolve_function(ref: str) -> Callable[..., Any]:
    """Import ``module:qualname``; raises ``LookupError`` with a clear message."""
    module_name, _, qualname = ref.partition(":")
    if not module_name or not qualname:
        raise LookupError(f"invalid function reference {ref!r}: expected 'module:qualname'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(f"cannot import module {module_name!r} for {ref}: {exc}") from exc
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LookupError(f"module {module_name!r} has no function {qualname!r}") from None
    if not callable(target):
        raise LookupError(f"{ref} is not callable")
    return target  # type: ignore[no-any-return]


class Serializer(Protocol):
    name: str

    def dumps_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes: ...

    def loads_call(self, ref: str, payload: bytes) -> FuncArgs: ...

    def dumps_result(self, value: Any) -> bytes: ...

    def loads_result(self, payload: bytes) -> Any: ...


class _NeedsCloudpickle(Exception):
    pass


def _fast_dumps(value: Any) -> bytes:
    """The standard pickler: 3x faster than cloudpickle for importable functions and
    plain data. Anything it would pickle by a reference the worker cannot follow
    goes to cloudpickle, which pickles it by value: objects it cannot pickle at all
    (lambdas, closures), anything from ``__main__`` (a dataclass of the producer's
    script, say), and everything once a module is registered to pickle by value."""
    if cloudpickle.list_registry_pickle_by_value():
        raise _NeedsCloudpickle
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if b"__main__" in data:
        raise _NeedsCloudpickle
    return data


def _cloud_dumps(value: Any) -> bytes:
    return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


class PickleSerializer:
    name = "pickle"

    def dumps_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        with contextlib.suppress(Exception):
            return _fast_dumps((func, args, kwargs))
        try:
            return _cloud_dumps((func, args, kwargs))
        except Exception as exc:
            raise SerializationError(
                f"cannot pickle the call to {function_ref(func)}: {type(exc).__name__}: {exc}"
            ) from exc

    def loads_call(self, ref: str, payload: bytes) -> FuncArgs:
        try:
            func, args, kwargs = pickle.loads(payload)
        except Exception as exc:
            raise SerializationError(
                f"cannot unpickle the call to {ref}: {type(exc).__name__}: {exc}"
            ) from exc
        return func, tuple(args), dict(kwargs)

    def dumps_result(self, value: Any) -> bytes:
        with contextlib.suppress(Exception):
            return _fast_dumps(value)
        try:
            return _cloud_dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"the result ({type(value).__name__}) cannot be pickled: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def loads_result(self, payload: bytes) -> Any:
        return pickle.loads(payload)


class JsonSerializer:
    name = "json"

    def dumps_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        ref = function_ref(func)
        try:
            found = resolve_function(ref)
        except LookupError as exc:
            raise SerializationError(
                f"json jobs need an importable function; {ref} is not: {exc}"
            ) from exc
        if found is not func and getattr(found, "__wrapped__", None) is not func:
            raise SerializationError(f"json jobs need an importable function; {ref} is not")
        try:
            return json.dumps([list(args), kwargs], separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"the arguments to {ref} are not JSON serializable: {exc}"
            ) from exc

    def loads_call(self, ref: str, payload: bytes) -> FuncArgs:
        args, kwargs = self.loads_args(ref, payload)
        return resolve_function(ref), args, kwargs

    def loads_args(self, ref: str, payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments alone, for a caller that resolves ``ref`` itself (through a
        json-mode supervisor's allow-list, ``naq.executors.allow``)."""
        try:
            args, kwargs = json.loads(payload)
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise ValueError("expected [args, kwargs]")
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"invalid json arguments for {ref}: {exc}") from exc
        return tuple(args), kwargs

    def dumps_result(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"the result ({type(value).__name__}) is not JSON serializable: {exc}"
            ) from exc

    def loads_result(self, payload: bytes) -> Any:
        return json.loads(payload)


JSON = JsonSerializer()
SERIALIZERS: dict[str, Serializer] = {"pickle": PickleSerializer(), "json": JSON}


def get_serializer(name: str) -> Serializer:
    try:
        return SERIALIZERS[name]
    except KeyError:
        raise SerializationError(f"unknown serializer {name!r}: use 'pickle' or 'json'") from None
