"""Passes on small IR files: ``tests/passes/NAME.in.mir`` run through the pass its
name starts with must print as ``tests/passes/NAME.out.mir`` (filecheck style).

To add a case: write the input by hand, run this test with MIXC_WRITE_EXPECTED=1
once to write the output file, read it, and keep it only if it is right."""
from __future__ import annotations

import difflib
import importlib
import os
from pathlib import Path

import pytest

from mixc.ir.parser import parse_module
from mixc.ir.printer import print_module
from mixc.passes import PIPELINE, verify

CASES = sorted((Path(__file__).parent / "passes").glob("*.in.mir"))
PASSES = [name for name, _ in PIPELINE]


def _pass_of(path):
    stem = path.name[:-len(".in.mir")]
    for name in sorted(PASSES, key=len, reverse=True):
        if stem.startswith(name):
            return name
    raise AssertionError(f"{path.name}: its name must start with a pass name ({', '.join(PASSES)})")


def _strip_comments(text):
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_pass_output(path):
    name = _pass_of(path)
    module = parse_module(path.read_text(encoding="utf-8"), filename=path.name)
    module.stage = PASSES[PASSES.index(name) - 1] if PASSES.index(name) else "trace"
    out = importlib.import_module(f"mixc.passes.{name}").run(module)
    out.stage = name
    verify.run(out)
    printed = print_module(out)
    expected_path = path.with_name(path.name.replace(".in.mir", ".out.mir"))
    if os.environ.get("MIXC_WRITE_EXPECTED"):
        expected_path.write_text(printed, encoding="utf-8")
    expected = _strip_comments(expected_path.read_text(encoding="utf-8"))
    diff = "".join(difflib.unified_diff(expected.splitlines(True), printed.splitlines(True),
                                        expected_path.name, "printed"))
    assert printed == expected, f"{name} on {path.name} printed something else:\n{diff}"
