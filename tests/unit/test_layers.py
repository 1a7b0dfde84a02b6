"""Names stay in one place, and the layer contracts stay consistent.

``naq/transport/names.py`` is the only module that spells a NATS subject, stream,
consumer or bucket name; every other module asks it. This test reads every other
module's string literals (plain strings and the literal parts of f-strings, not
docstrings) and fails on a fragment of such a name. The import contracts themselves
are checked by ``lint-imports`` (``make lint``).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "naq"
NAMES_MODULE = PACKAGE / "transport" / "names.py"

# Fragments that only a name can contain: API and KV subjects, stream prefixes,
# the tokens after a namespace, and the pull request's subject.
_SUBJECT_FRAGMENTS = re.compile(
    r"\$JS\.|\$KV\.|MSG\.NEXT|KV_|NAQ_JOBS_|NAQ_FAILED_|NAQ_ADVISORIES_|NASQ_"
    r"|\.(?:jobs|sched|failed|control|nasq)\."
)
# Bucket suffixes: flagged where they follow a namespace (the start of an f-string's
# literal part, right after ``{ns}``; the default namespace; a format placeholder),
# so identifiers such as "fetch_job_results" in ``__all__`` are not names.
_BUCKET_SUFFIX = re.compile(
    r"(?:^|\bnaq|\}|%s|%\(\w+\)s)_(?:results|workers|deps|schedules|leader)(?![\w-])"
)
# Dependency keys: "held.{id}" and "waiters.{dep}", not "is held." in a sentence.
_DEPENDENCY_KEY = re.compile(r"(?<![\w ])(?:held|waiters)\.")
_PATTERNS = (_SUBJECT_FRAGMENTS, _BUCKET_SUFFIX, _DEPENDENCY_KEY)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != NAMES_MODULE)


def _documentation(tree: ast.Module) -> set[int]:
    """Ids of string statements: docstrings and the strings that document attributes.

    A string on its own as a statement is never used as a value, so it cannot build a
    name.
    """
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            skipped.add(id(node.value))
    return skipped


def _literals(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of every string constant and f-string literal part, docstrings aside."""
    skipped = _documentation(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.JoinedStr):
            for part in node.values:
                skipped.add(id(part))
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    found.append((part.lineno, part.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def _spelled_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for line, text in sorted(_literals(tree))
        if any(pattern.search(text) for pattern in _PATTERNS)
    ]


@pytest.mark.parametrize(
    "path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)).removesuffix(".py")
)
def test_only_names_module_spells_nats_names(path: Path) -> None:
    offenders = _spelled_names(path)
    assert not offenders, (
        "NATS names are spelled only in naq/transport/names.py; use its Layout or helpers:\n"
        + "\n".join(offenders)
    )


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("$JS.API.STREAM.INFO", True),
        ("$KV.naq_results.j1", True),
        ("KV_naq_results", True),
        ("NAQ_JOBS_", True),
        (".jobs.", True),
        ("naq.control.cancel", True),
        ("_results", True),
        ("naq_workers", True),
        ("%s_deps", True),
        ("held.", True),
        ("waiters.>", True),
        ("fetch_job_results", False),
        ("current_leader", False),
        ("the job is held.", False),
        ("failed jobs", False),
    ],
)
def test_patterns(text: str, flagged: bool) -> None:
    assert any(pattern.search(text) for pattern in _PATTERNS) is flagged


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    return {contract["id"]: contract for contract in contracts}


def test_every_pure_value_module_is_kept_free_of_nats() -> None:
    """A module in the lowest layer must also be a source of the "pure-values"
    contract, which is what forbids it to import NATS (a layer forbids only upward
    imports inside naq)."""
    contracts = _contracts()
    lowest = contracts["layers"]["layers"][-1]
    tails = [tail.strip().strip("()") for tail in lowest.split(":")]
    existing = [
        f"naq.{tail}"
        for tail in tails
        if (PACKAGE / f"{tail}.py").exists() or (PACKAGE / tail / "__init__.py").exists()
    ]
    sources = set(contracts["pure-values"]["source_modules"])
    assert [module for module in existing if module not in sources] == []
