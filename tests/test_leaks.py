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

Edited bundles (``tests/leaks/bundles/*.edit``): each edits the party
programs of a bundle of ``conftest.LEAKY_PROGRAM`` the way whoever
ships a bundle could, then recomputes the manifest's hashes::

    # leak: what the edit makes a party learn
    # expect: a regex the refusal must match (after "<bundle dir>/")
    # <party>: OLD => NEW    (in <party>.mir, applied once each, in order)

``mixc audit`` and ``mixc run`` (every mode) must refuse it, naming the file
and line, before any party program starts (mixc.disclosure).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest

from mixc.errors import VerifyError
from mixc.ir.parser import parse_module
from mixc.passes import verify

from conftest import write_leaky_program

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


# ---------------------------------------------------------------- edited bundles

BUNDLES = Path(__file__).parent / "leaks" / "bundles"
EDITS = sorted(BUNDLES.glob("*.edit"))
BRIEF_ATTACKS = ("input_instead_of_result_share", "own_share_to_peer")


def _mixc(*args, cwd, timeout=180):
    return subprocess.run([sys.executable, "-m", "mixc", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """A built bundle of LEAKY_PROGRAM (as program.py) and its inputs, in a fresh directory."""
    d = tmp_path_factory.mktemp("leaky")
    done = _mixc("build", write_leaky_program(d), "-o", d / "clean", cwd=d)
    assert done.returncode == 0, done.stderr
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, 3).astype(np.float32) for _ in range(2))
    np.save(d / "a.npy", a)
    np.save(d / "b.npy", b)
    return d, a, b


def _edit(text):
    leak, expect, edits = [], None, []
    for line in text.splitlines():
        key, _, value = line[1:].strip().partition(": ")
        if key == "leak":
            leak.append(value)
        elif key == "expect":
            expect = value
        elif key:
            old, sep, new = value.partition(" => ")
            assert sep, f"an edit line needs ' => ': {line!r}"
            edits.append((key, old, new.replace("\\n", "\n")))
    return " ".join(leak), expect, edits


def _edited(d, case):
    """A copy of the clean bundle with the case's edits, the manifest's hashes redone."""
    from mixc.bundle import program_hash, text_hash
    _, _, edits = _edit(case.read_text())
    out = d / case.stem
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(d / "clean", out)
    for party, old, new in edits:
        f = out / f"{party}.mir"
        text = f.read_text()
        assert text.count(old) == 1, f"{case.name}: {old!r} must occur once in {party}.mir"
        f.write_text(text.replace(old, new))
    manifest = json.loads((out / "manifest.json").read_text())
    texts = {p: (out / f"{p}.mir").read_text() for p in manifest["parties"]}
    manifest["party_hashes"] = {p: text_hash(t) for p, t in texts.items()}
    manifest["hash"] = program_hash(texts)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return case.stem


def _refused(done, name, expect):
    assert done.returncode != 0, done.stdout
    assert re.search(f"{re.escape(name)}/{expect}", done.stderr), done.stderr
    assert "revealed to" not in done.stdout and not done.stdout.strip(), done.stdout


def test_corpus_of_edited_bundles():
    names = [c.stem for c in EDITS]
    assert set(BRIEF_ATTACKS) <= set(names) and len(names) >= 6
    for c in EDITS:
        leak, expect, edits = _edit(c.read_text())
        assert leak and expect and edits, c.name


def test_clean_bundle_audits_and_runs(leaky):
    d, a, b = leaky
    audit = _mixc("audit", "clean", cwd=d)
    assert audit.returncode == 0, audit.stderr
    assert audit.stdout.startswith((d / "clean" / "audit.txt").read_text().rstrip("\n"))
    assert "every party program is what the global program compiles to" in audit.stdout
    assert re.search(r"alice learns a share from bob at clean/bob\.mir:\d+ \(3 elements\)",
                     audit.stdout), audit.stdout
    run = _mixc("run", "clean", "--local", "--input", "a=a.npy", "--input", "b=b.npy",
                "--output", "out", cwd=d)
    assert run.returncode == 0, run.stderr
    c, want_d = a * b + a, np.zeros(3, np.float32)
    for _ in range(3):
        want_d = want_d * b + a
    np.testing.assert_allclose(np.load(d / "out" / "alice" / "c.npy"), c, atol=1e-3)
    np.testing.assert_allclose(np.load(d / "out" / "bob" / "d.npy"), want_d, atol=1e-3)


@pytest.mark.parametrize("case", EDITS, ids=lambda p: p.stem)
def test_edited_bundle_is_refused_by_audit_and_run(leaky, case):
    d, _, _ = leaky
    _, expect, _ = _edit(case.read_text())
    name = _edited(d, case)
    _refused(_mixc("audit", name, cwd=d), name, expect)
    out = d / f"{name}_out"
    _refused(_mixc("run", name, "--local", "--input", "a=a.npy", "--input", "b=b.npy",
                   "--output", out, cwd=d), name, expect)
    assert not any(p.is_file() for p in out.rglob("*")), "a party program ran"


@pytest.mark.parametrize("attack", BRIEF_ATTACKS)
def test_brief_attacks_are_refused_in_every_run_mode(leaky, attack):
    d, _, _ = leaky
    case = BUNDLES / f"{attack}.edit"
    _, expect, _ = _edit(case.read_text())
    name = _edited(d, case)
    peers = "alice=127.0.0.1:1,bob=127.0.0.1:2,dealer=127.0.0.1:3"
    for party, given in (("alice", ["--input", "a=a.npy"]), ("bob", ["--input", "b=b.npy"]),
                         ("dealer", [])):
        _refused(_mixc("run", name, "--party", party, "--peers", peers, *given, cwd=d),
                 name, expect)
    _refused(_mixc("run", name, "--local", "--check-ranges", "--input", "a=a.npy",
                   "--input", "b=b.npy", cwd=d), name, expect)
