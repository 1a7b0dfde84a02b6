"""Both serializers, and the errors users see when a call cannot travel."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from naq.errors import SerializationError
from naq.serializers import (
    JsonSerializer,
    PickleSerializer,
    function_ref,
    get_serializer,
    resolve_function,
)
from tests import jobs
from tests.conftest import subprocess_env

pickler = PickleSerializer()
jsoner = JsonSerializer()


def make_adder(n: int) -> Callable[[int], int]:
    def adder(x: int) -> int:
        return x + n

    return adder


def test_get_serializer() -> None:
    assert get_serializer("pickle").name == "pickle"
    assert get_serializer("json").name == "json"
    with pytest.raises(SerializationError, match="unknown serializer 'yaml'"):
        get_serializer("yaml")


def test_function_ref() -> None:
    assert function_ref(jobs.add) == "tests.jobs:add"
    assert function_ref(jobs.async_add) == "tests.jobs:async_add"
    assert function_ref(make_adder(1)).endswith(":make_adder.<locals>.adder")


# pickle


def test_pickle_round_trips_a_closure() -> None:
    func, args, kwargs = pickler.loads_call("x:adder", pickler.dumps_call(make_adder(10), (5,), {}))
    assert (args, kwargs) == ((5,), {})
    assert func(*args) == 15


def test_pickle_round_trips_a_lambda_with_kwargs() -> None:
    payload = pickler.dumps_call(lambda x, *, y: x * y, (3,), {"y": 4})
    func, args, kwargs = pickler.loads_call("x:<lambda>", payload)
    assert kwargs == {"y": 4}
    assert func(*args, **kwargs) == 12


def test_pickle_round_trips_an_importable_function() -> None:
    payload = pickler.dumps_call(jobs.echo, (1, "a"), {"k": [1, 2], "n": None})
    func, args, kwargs = pickler.loads_call("tests.jobs:echo", payload)
    assert func is jobs.echo
    assert args == (1, "a")
    assert kwargs == {"k": [1, 2], "n": None}


def test_pickle_of_an_unpicklable_argument_names_the_function() -> None:
    with pytest.raises(SerializationError, match=r"cannot pickle the call to tests\.jobs:echo"):
        pickler.dumps_call(jobs.echo, (threading.Lock(),), {})


def test_pickle_of_an_unpicklable_result() -> None:
    with pytest.raises(SerializationError, match=r"the result \(lock\) cannot be pickled"):
        pickler.dumps_result(threading.Lock())


def test_pickle_result_round_trip() -> None:
    value = {"a": (1, 2), "b": {3, 4}}
    assert pickler.loads_result(pickler.dumps_result(value)) == value


def test_pickle_loads_call_of_garbage() -> None:
    with pytest.raises(SerializationError, match=r"cannot unpickle the call to tests\.jobs:add"):
        pickler.loads_call("tests.jobs:add", b"definitely not a pickle")


# json


def test_json_round_trips_an_importable_function() -> None:
    payload = jsoner.dumps_call(jobs.add, (2, 3), {})
    func, args, kwargs = jsoner.loads_call(function_ref(jobs.add), payload)
    assert func is jobs.add
    assert (args, kwargs) == ((2, 3), {})
    assert func(*args, **kwargs) == 5


def test_json_round_trips_kwargs() -> None:
    payload = jsoner.dumps_call(jobs.echo, ("a",), {"n": 1, "items": [1, "x", None]})
    func, args, kwargs = jsoner.loads_call("tests.jobs:echo", payload)
    assert func is jobs.echo
    assert args == ("a",)
    assert kwargs == {"n": 1, "items": [1, "x", None]}


def test_json_payload_holds_no_code() -> None:
    assert jsoner.dumps_call(jobs.add, (1, 2), {"x": "y"}) == b'[[1,2],{"x":"y"}]'


@pytest.mark.parametrize("func", [lambda a: a, make_adder(1)], ids=["lambda", "local function"])
def test_json_rejects_functions_that_cannot_be_imported(func: Callable[..., Any]) -> None:
    with pytest.raises(SerializationError, match="json jobs need an importable function"):
        jsoner.dumps_call(func, (1,), {})


def test_json_rejects_non_json_arguments() -> None:
    with pytest.raises(
        SerializationError, match=r"the arguments to tests\.jobs:echo are not JSON serializable"
    ):
        jsoner.dumps_call(jobs.echo, ({1, 2},), {})


def test_json_rejects_non_json_kwargs() -> None:
    with pytest.raises(SerializationError, match="not JSON serializable"):
        jsoner.dumps_call(jobs.echo, (), {"when": object()})


def test_json_result_of_a_set() -> None:
    with pytest.raises(SerializationError, match=r"the result \(set\) is not JSON serializable"):
        jsoner.dumps_result({1, 2, 3})


def test_json_result_round_trip() -> None:
    value = {"n": 1, "items": [1.5, "x", None, True]}
    assert jsoner.loads_result(jsoner.dumps_result(value)) == value


@pytest.mark.parametrize(
    "payload",
    [b"\x00garbage", b"", b"{}", b"[1]", b"[[], [], []]", b"[{}, []]", b"42", b"null"],
)
def test_json_loads_call_of_garbage(payload: bytes) -> None:
    with pytest.raises(SerializationError, match=r"invalid json arguments for tests\.jobs:add"):
        jsoner.loads_call("tests.jobs:add", payload)


def test_json_loads_call_of_a_missing_function() -> None:
    with pytest.raises(LookupError, match="has no function 'nope'"):
        jsoner.loads_call("tests.jobs:nope", b"[[],{}]")


# resolve_function


def test_resolve_function() -> None:
    assert resolve_function("tests.jobs:add") is jobs.add
    assert resolve_function("tests.unit.test_serializers:make_adder") is make_adder


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("no_such_module_for_naq:f", "cannot import module 'no_such_module_for_naq'"),
        ("tests.jobs:nope", "module 'tests.jobs' has no function 'nope'"),
        ("tests.jobs:add.nope", r"module 'tests.jobs' has no function 'add\.nope'"),
        ("tests.jobs.add", "invalid function reference 'tests.jobs.add'"),
        (":add", "invalid function reference"),
        ("tests.jobs:", "invalid function reference"),
        ("tests.jobs:threading", "is not callable"),
    ],
)
def test_resolve_function_errors(ref: str, expected: str) -> None:
    with pytest.raises(LookupError, match=expected):
        resolve_function(ref)


def test_objects_from_the_producers_main_travel_by_value() -> None:
    """A dataclass or partial defined in the producer's script must decode in a worker,
    whose ``__main__`` is another program: the fast pickler would send a reference."""
    script = (
        "import dataclasses, functools, sys\n"
        "from naq.serializers import PickleSerializer\n"
        "@dataclasses.dataclass\n"
        "class Point:\n"
        "    x: int\n"
        "def helper(a):\n"
        "    return a * 10\n"
        "data = PickleSerializer().dumps_call(functools.partial(helper, 4), (Point(3),), {})\n"
        "sys.stdout.buffer.write(data)\n"
    )
    produced = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, env=subprocess_env()
    ).stdout
    func, args, kwargs = PickleSerializer().loads_call("__main__:helper", produced)
    assert func() == 40
    assert args[0].x == 3
    assert kwargs == {}
