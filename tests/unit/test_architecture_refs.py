"""Every test that ``docs/architecture.md`` names as the proof of a guarantee exists.

Why: the failure model promises that each of its claims has the test that shows it.
A test renamed or deleted would leave the claim standing with nothing behind it;
this keeps the page and the suite in step.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"(test_\w+\.py)(?:::(test_\w+))?|`::(test_\w+)`")
"""``test_file.py``, ``test_file.py::test_name``, or ``::test_name`` (in the last file named)."""


def named_tests(text: str) -> list[tuple[str, str | None]]:
    """(file, test) pairs in the order the page names them; test None for a bare file."""
    named: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in REFERENCE.finditer(text):
        if match.group(1):
            current = match.group(1)
            named.append((current, match.group(2)))
        elif current is not None:
            named.append((current, match.group(3)))
    return named


def test_a_bare_test_name_belongs_to_the_file_named_before_it() -> None:
    text = "`a/test_one.py::test_x`, `::test_y`; `test_two.py`"
    assert named_tests(text) == [
        ("test_one.py", "test_x"),
        ("test_one.py", "test_y"),
        ("test_two.py", None),
    ]


def test_every_test_the_architecture_page_names_exists() -> None:
    sources: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        sources.setdefault(path.name, []).append(path.read_text())
    named = named_tests((ROOT / "docs" / "architecture.md").read_text())
    assert len([test for _, test in named if test]) > 50  # the page names its proofs
    missing = [
        f"{file}::{test}" if test else file
        for file, test in named
        if file not in sources
        or (test and not any(re.search(rf"\bdef {test}\(", s) for s in sources[file]))
    ]
    assert missing == []
