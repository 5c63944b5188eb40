"""Golden IR files: each ``tests/ir/*.mir`` is canonical printed IR.

For every file: parse it, print it, and compare with the file's own text,
so the files pin down the printed format (a change to the printer or the
parser that changes the text shows up here as a diff), and they are
examples of the IR a reader can open. A file may start with ``#`` comment
lines saying what it covers; they are not part of the comparison (the
printer never emits comments).

To add a case: write the IR by hand, run this test, and fix the file until
it matches what the printer prints.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from mixc.ir.parser import parse_module
from mixc.ir.printer import print_module

GOLDEN = sorted((Path(__file__).parent / "ir").glob("*.mir"))


def _canonical(text: str) -> str:
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def test_there_are_golden_files():
    assert len(GOLDEN) >= 3


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden(path):
    text = path.read_text(encoding="utf-8")
    module = parse_module(text, filename=path.name)
    printed = print_module(module)
    expected = _canonical(text)
    if printed != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), printed.splitlines(True),
                                            f"{path.name} (file)", f"{path.name} (printed)"))
        pytest.fail(f"{path.name} is not what the printer prints:\n{diff}")
    assert parse_module(printed) == module
