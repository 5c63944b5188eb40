"""The verifier rejects a corpus of hand-written leaking IR programs.

Each ``tests/leaks/*.mir`` is one kind of leak, written the way a buggy pass
or protocol (or a tampered bundle) would produce it: global IR (``g_*``),
lowered IR with values at parties (``l_*``) and one party's program
(``p_*``). Its header says what leaks and how to fix it::

    # leak: what is wrong
    # expect: a regex the VerifyError's message must match
    # fix: OLD => NEW        (applied once each, in order; "\\n" starts a new line)

The leaking text must raise ``VerifyError`` matching ``expect``; the fixed
text (its clean counterpart) must verify, so each file pins down exactly
the line that leaks.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mixc.errors import VerifyError
from mixc.ir.parser import parse_module
from mixc.passes import verify

CORPUS = sorted((Path(__file__).parent / "leaks").glob("*.mir"))


def _header(text):
    leak, expect, fixes = None, None, []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(": ")
        if key == "leak":
            leak = value
        elif key == "expect":
            expect = value
        elif key == "fix":
            old, sep, new = value.partition(" => ")
            assert sep, f"a fix line needs ' => ': {line!r}"
            fixes.append((old, new.replace("\\n", "\n")))
    return leak, expect, fixes


def _fixed(text, fixes):
    """The body (below the header comments) with each fix applied."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    body = "".join(lines)
    for old, new in fixes:
        assert body.count(old) == 1, f"fix {old!r} must match exactly once"
        body = body.replace(old, new)
    return body


def test_the_corpus_covers_every_level():
    names = [p.name for p in CORPUS]
    for prefix in ("g_", "l_", "p_"):
        assert sum(n.startswith(prefix) for n in names) >= 3, prefix
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_leak_is_rejected(path):
    text = path.read_text(encoding="utf-8")
    leak, expect, fixes = _header(text)
    assert leak and expect and fixes, f"{path.name} needs # leak:, # expect: and # fix: lines"
    module = parse_module(text, filename=path.name)
    with pytest.raises(VerifyError) as info:
        verify.run(module)
    assert re.search(expect, str(info.value)), f"{path.name}: {info.value}"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_clean_counterpart_passes(path):
    text = path.read_text(encoding="utf-8")
    _, _, fixes = _header(text)
    clean = _fixed(text, fixes)
    verify.run(parse_module(clean, filename=path.name))
