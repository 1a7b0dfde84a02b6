"""The json-mode allow-list: which function references pass, decided without importing.

A module the list refuses must never be imported, so the tests that refuse one use a
module that writes a marker file when imported and check that the file is absent and
the name is not in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from naq.executors.allow import AllowList, Refused, split_reference
from naq.executors.base import Call
from naq.executors.calls import Rejected, load
from naq.executors.frames import pack_call, unpack, unpack_call
from naq.job import new_job_id

TASKS = """\
import os
from os import system

def add(a, b):
    return a + b

class Jobs:
    helper = staticmethod(system)

    @staticmethod
    def double(x):
        return 2 * x
"""


def loud(marker: Path) -> str:
    """A module that leaves a marker file the moment it is imported."""
    return f"from pathlib import Path\nPath({str(marker)!r}).touch()\n\ndef run():\n    return 1\n"


class App:
    """A working directory with a job module, a module that marks its import, and
    another such module outside the directory (on ``sys.path`` all the same)."""

    def __init__(self, tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.root = tmp_path / "app"
        self.elsewhere = tmp_path / "elsewhere"
        self.root.mkdir()
        self.elsewhere.mkdir()
        self.tasks = f"tasks_{tag}"
        self.inside = f"loud_in_{tag}"
        self.outside = f"loud_out_{tag}"
        self.marker = tmp_path / "imported"
        (self.root / f"{self.tasks}.py").write_text(TASKS)
        (self.root / f"{self.inside}.py").write_text(loud(self.marker))
        (self.elsewhere / f"{self.outside}.py").write_text(loud(self.marker))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.tasks, self.inside, self.outside)

    def assert_not_imported(self, *names: str) -> None:
        assert not self.marker.exists(), "a refused module was imported"
        for name in names:
            assert name not in sys.modules, name


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    made = App(tmp_path)
    monkeypatch.syspath_prepend(str(made.root))
    monkeypatch.syspath_prepend(str(made.elsewhere))
    importlib.invalidate_caches()
    yield made
    for name in made.names:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("tasks", "not 'module:qualname'"),
        (".tasks:add", "dotted identifiers"),
        ("..tasks:add", "dotted identifiers"),
        ("tasks:", "dotted identifiers"),
        (":add", "dotted identifiers"),
        ("tasks:make.<locals>.inner", "dotted identifiers"),
        ("tasks:add.__globals__", "dunder"),
        ("tasks:__builtins__.exec", "dunder"),
        ("__main__:run", "dunder"),
        ("tasks:add:x", "dotted identifiers"),
        ("os system:x", "dotted identifiers"),
    ],
)
def test_references_that_are_not_plain_names_are_refused(ref: str, expected: str) -> None:
    with pytest.raises(Refused, match=expected):
        split_reference(ref)


def test_a_plain_reference_splits() -> None:
    assert split_reference("reports.daily:Report.build") == ("reports.daily", ("Report", "build"))


@pytest.mark.parametrize(
    "ref",
    [
        "os:system",
        "builtins:exec",
        "builtins:eval",
        "subprocess:run",
        "importlib:import_module",
        "json:loads",
        "pytest:main",  # installed, and imported already
        "naq.serializers:resolve_function",
        "nats:connect",
    ],
)
def test_the_default_refuses_the_standard_library_and_installed_packages(
    app: App, ref: str
) -> None:
    with pytest.raises(Refused, match="working directory"):
        AllowList.configured((), (), str(app.root)).check(ref)


def test_the_default_allows_the_working_directory_only(app: App) -> None:
    allow = AllowList.configured((), (), str(app.root))
    assert allow.check(f"{app.tasks}:add") == (app.tasks, ("add",))
    allow.check(f"{app.inside}:run")
    with pytest.raises(Refused, match=f"module '{app.outside}' is not allowed"):
        allow.check(f"{app.outside}:run")
    app.assert_not_imported(*app.names)


def test_a_file_named_like_the_standard_library_or_a_loaded_module_is_refused(
    app: App,
) -> None:
    """``os.py`` or ``pytest.py`` in the working directory is not what ``import`` gives."""
    for shadow in ("os", "subprocess", "pytest", "naq"):
        (app.root / f"{shadow}.py").write_text("def system(cmd):\n    return cmd\n")
    allow = AllowList.configured((), (), str(app.root))
    for ref in ("os:system", "subprocess:system", "pytest:system", "naq:system"):
        with pytest.raises(Refused):
            allow.check(ref)


def test_a_module_shadowed_by_an_earlier_path_entry_is_refused(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``import`` would load the other file, so the one in the directory does not count."""
    (app.elsewhere / f"{app.inside}.py").write_text("def run():\n    return 0\n")
    monkeypatch.syspath_prepend(str(app.elsewhere))  # now first
    importlib.invalidate_caches()
    with pytest.raises(Refused):
        AllowList.configured((), (), str(app.root)).check(f"{app.inside}:run")


def test_configured_names_and_patterns(app: App) -> None:
    allow = AllowList.configured((app.outside, "reports.*"), ("preloaded",), str(app.root))
    assert allow.root is None  # a list given: the working directory is not implied
    allow.check(f"{app.outside}:run")
    allow.check(f"{app.outside}.sub:run")  # a name allows its submodules
    allow.check("reports.daily:build")
    allow.check("preloaded:setup")
    for ref in (f"{app.tasks}:add", "reports:build", "os:system", f"{app.outside}x:run"):
        with pytest.raises(Refused, match="allowed modules"):
            allow.check(ref)
    app.assert_not_imported(*app.names)


def test_resolve_refuses_a_walk_through_a_module_or_to_a_foreign_function(app: App) -> None:
    allow = AllowList.configured((), (), str(app.root))
    assert allow.resolve(f"{app.tasks}:add")(2, 3) == 5
    assert allow.resolve(f"{app.tasks}:Jobs.double")(4) == 8
    with pytest.raises(Refused, match="'os' is a module"):
        allow.resolve(f"{app.tasks}:os.system")
    with pytest.raises(Refused, match="defined in 'posix'"):
        allow.resolve(f"{app.tasks}:system")  # from os import system
    with pytest.raises(Refused, match="defined in 'posix'"):
        allow.resolve(f"{app.tasks}:Jobs.helper")
    with pytest.raises(LookupError, match="has no function"):
        allow.resolve(f"{app.tasks}:nope")


def test_the_executor_refuses_without_importing(app: App) -> None:
    """The second check, where the job runs: the module is never imported."""
    allow = AllowList.configured((), (), str(app.root))
    for ref in (f"{app.outside}:run", "importlib:import_module", "os:system"):
        call = Call(new_job_id(), ref, "json", b"[[],{}]", allow=allow)
        with pytest.raises(Rejected, match="not allowed"):
            load(call)
    pickled = Call(new_job_id(), f"{app.tasks}:add", "pickle", b"\x80junk", allow=allow)
    with pytest.raises(Rejected, match="never unpickles"):
        load(pickled)
    app.assert_not_imported(app.outside)


def test_the_allow_list_crosses_the_process_boundary(app: App) -> None:
    """A process or interpreter child gets the list inside the call's frame."""
    allow = AllowList.configured(("tasks",), ("more",), str(app.root))
    call = Call(new_job_id(), "tasks:add", "json", b"[[1,2],{}]", allow=allow)
    back = unpack_call(*unpack(pack_call(call)[4:]))
    assert back == call
    plain = Call(new_job_id(), "tasks:add", "json", b"[[1,2],{}]")
    assert unpack_call(*unpack(pack_call(plain)[4:])).allow is None
