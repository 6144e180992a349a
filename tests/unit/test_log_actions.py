"""Log actions: declared once (``Action``), listed in docs/logging.md, never logged undeclared."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from feedwatch.observability.actions import Action
from feedwatch.store.records import OutcomeKind

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "operator" / "feedwatch"


def documented() -> dict[str, str]:
    text = (ROOT / "docs" / "logging.md").read_text()
    return dict(re.findall(r"^\| `([a-z_]+)` \| (.*?) \|$", text, flags=re.MULTILINE))


def declared() -> dict[str, str]:
    """Each member with the ``#:`` comment that explains it (the docs' second column)."""
    text = (SOURCE / "observability" / "actions.py").read_text()
    return dict(re.findall(r'^\s+[A-Z_]+ = "([a-z_]+)"\s+#: (.*)$', text, flags=re.MULTILINE))


def test_every_action_is_explained_and_documented_as_declared() -> None:
    assert set(declared()) == {a.value for a in Action}, "every Action member needs a #: comment"
    assert documented() == declared()


def test_no_code_logs_an_action_as_a_bare_string() -> None:
    bare = re.compile(r'"action":\s*f?"|\.(?:drop|event)\(\s*[\w\[\]]+,\s*"')
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in SOURCE.rglob("*.py")
        if path.name != "actions.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert offenders == [], "log an Action member (feedwatch.observability.actions), not a string"


@pytest.mark.parametrize("kind", [k for k in get_args(OutcomeKind) if k != "complete"])
def test_every_item_outcome_but_complete_has_its_action(kind: str) -> None:
    """The dispatcher logs ``Action(f"item_{kind}")``: a new kind without its member would raise."""
    assert Action(f"item_{kind}").value == f"item_{kind}"
