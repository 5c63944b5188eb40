"""Bad input through the CLI: rejected before the first message, in one line.

Every case runs ``mixc.cli.main`` (the ``mixc`` entry point) in-process, with
every peer address pointing at a listening socket of the test: after each
case the test checks that nobody connected there, i.e. the party was stopped
before it sent anything. A sample also runs as ``python -m mixc``. Then a
hypothesis fuzz of a bundle's party IR file: any mutation is rejected with
one line naming the file -- ``alice.mir:LINE:COL: ...`` when the text no
longer parses, "edited after mixc build" when it still parses but is not
the program that was built -- exit status 1, no traceback.
"""
from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_cli import PROGRAM, assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "examples" / "two_party.devices"
LINE_COL = r"alice\.mir:\d+:\d+: "


class Sentinels:
    """Listening sockets standing in for every peer; ``touched()``: did anyone connect?"""

    def __init__(self, names):
        self.socks = {}
        for n in names:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            self.socks[n] = s

    def peers(self):
        return ",".join(f"{n}=127.0.0.1:{s.getsockname()[1]}" for n, s in self.socks.items())

    def touched(self):
        ready, _, _ = select.select(list(self.socks.values()), [], [], 0)
        for s in ready:
            conn, _ = s.accept()
            conn.close()
        return bool(ready)

    def close(self):
        for s in self.socks.values():
            s.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "small.py").write_text(PROGRAM)
    res = subprocess.run([sys.executable, "-m", "mixc", "build", str(d / "small.py"), "-o",
                          str(d / "bundle")], cwd=d, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rng = np.random.default_rng(5)
    a = rng.uniform(-2, 2, (4, 3)).astype(np.float32)
    np.save(d / "a.npy", a)
    np.save(d / "b.npy", a)
    files = {
        "complex.npy": lambda p: np.save(p, a.astype(np.complex64)),
        "int.npy": lambda p: np.save(p, np.ones((4, 3), np.int64)),
        "text.npy": lambda p: np.save(p, np.array([["x"] * 3] * 4)),
        "shape.npy": lambda p: np.save(p, np.zeros((3, 4), np.float32)),
        "truncated.npy": lambda p: p.write_bytes((d / "a.npy").read_bytes()[:70]),
        "garbage.npy": lambda p: p.write_bytes(b"\x93NUMPY\x09\x09garbage" * 4),
        "object.npy": lambda p: np.save(p, np.array([{}, 1], dtype=object), allow_pickle=True),
        "several.npy": lambda p: p.write_bytes(_npz_bytes(d)),
        "ragged.csv": lambda p: p.write_text("1,2,3\n4,5\n1,2,3\n1,2,3\n"),
        "fourcols.csv": lambda p: p.write_text("1,2,3,4\n" * 4),
        "words.csv": lambda p: p.write_text("1,2,x\n" * 4),
        "empty.csv": lambda p: p.write_text(""),
        "binary.csv": lambda p: p.write_bytes(b"\xff\xfe\x00\x01" * 8),
        "input.txt": lambda p: p.write_text("1 2 3\n"),
        "nan.npy": lambda p: np.save(p, np.where(np.arange(12).reshape(4, 3) == 5, np.nan, a)),
        "huge.csv": lambda p: p.write_text("1,2,3\n1,2,3\n1,-1e15,3\n1,2,3\n"),
    }
    for name, make in files.items():
        make(d / name)
    (d / "dir.npy").mkdir()
    return d


def _npz_bytes(d):
    np.savez(d / "tmp.npz", x=np.ones(3), y=np.ones(3))
    data = (d / "tmp.npz").read_bytes()
    (d / "tmp.npz").unlink()
    return data


@pytest.fixture()
def sentinels():
    s = Sentinels(["alice", "bob", "dealer"])
    yield s
    s.close()


def run_main(capsys, *args):
    from mixc.cli import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def alice(d, sentinels, *inputs, bundle=None):
    return ["run", bundle or d / "bundle", "--party", "alice", "--peers", sentinels.peers(),
            "--timeout", "1", *[x for i in inputs for x in ("--input", i)]]


def input_cases(d):
    """(input arg for alice's 'a', needles) -- each must fail before connecting."""
    return [
        (f"a={d / 'complex.npy'}", ["'a'", "dtype complex64", "f32"]),
        (f"a={d / 'int.npy'}", ["'a'", "dtype int64", "f32"]),
        (f"a={d / 'text.npy'}", ["'a'", "dtype <U1"]),
        (f"a={d / 'shape.npy'}", ["'a'", "shape (3, 4)", "(4, 3)"]),
        (f"a={d / 'truncated.npy'}", ["truncated.npy", "cannot read"]),
        (f"a={d / 'garbage.npy'}", ["garbage.npy", "cannot read"]),
        (f"a={d / 'object.npy'}", ["object.npy", "cannot read"]),
        (f"a={d / 'several.npy'}", ["several.npy", "several arrays"]),
        (f"a={d / 'ragged.csv'}", ["ragged.csv", "number of columns changed from 3 to 2"]),
        (f"a={d / 'fourcols.csv'}", ["fourcols.csv", "shape (4, 4)", "(4, 3)"]),
        (f"a={d / 'words.csv'}", ["words.csv", "'x'"]),
        (f"a={d / 'empty.csv'}", ["empty.csv", "holds no values"]),
        (f"a={d / 'binary.csv'}", ["binary.csv", "cannot read"]),
        (f"a={d / 'input.txt'}", ["input.txt", "unsupported file type"]),
        (f"a={d / 'dir.npy'}", ["dir.npy", "not a file"]),
        (f"a={d / 'nope.npy'}", ["nope.npy", "no such file"]),
        (f"a={d / 'nan.npy'}", ["input 'a' of party 'alice' holds nan at index [1, 2], which "
                                "fixed point cannot encode", "nan.npy"]),
        (f"a={d / 'huge.csv'}", ["input 'a' of party 'alice' holds -1e+15 at index [2, 1], "
                                 "outside the fixed-point range |x| < 2^45", "huge.csv"]),
    ]


def test_bad_inputs_fail_before_connecting(work, sentinels, capsys):
    d = work
    cases = input_cases(d) + [
        (None, ["missing input", "a (party alice)"]),
        (f"b={d / 'b.npy'}", ["'b'", "belongs to party 'bob'"]),
        (f"zz={d / 'a.npy'}", ["unknown input", "zz"]),
    ]
    for arg, needles in cases:
        args = alice(d, sentinels, *([arg] if arg else []))
        assert_one_line_error(run_main(capsys, *args), *needles)
        assert not sentinels.touched(), (arg, "connected before rejecting the input")
    # the same inputs given to --local: rejected once, in the parent, before any child starts
    for arg, needles in input_cases(d)[:4] + input_cases(d)[-2:]:
        res = run_main(capsys, "run", d / "bundle", "--local", "--input", arg, "--input",
                       f"b={d / 'b.npy'}")
        assert_one_line_error(res, *needles)


TREE_PROGRAM = f'''
import mixc
from mixc import device, reveal

cluster = mixc.init_device({str(DEVICES)!r})
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


@mixc.program
def affine(params: mixc.Input(p2, {{"w": (3, 2), "b": (2,)}}), x: mixc.Input(p1, (4, 3))):
    y = device(mpc)(lambda p, x: x @ p["w"] + p["b"])(params, x)
    return {{"y": reveal(y, p1)}}
'''


def test_bad_tree_inputs_fail_before_connecting(tmp_path, sentinels, capsys):
    """``--input params=params.npz``: one array per leaf path; anything else is one line
    naming the leaf, before bob connects to anyone."""
    d = tmp_path
    (d / "affine.py").write_text(TREE_PROGRAM)
    assert run_main(capsys, "build", d / "affine.py", "-o", d / "bundle").returncode == 0
    w, b = np.ones((3, 2), np.float32), np.ones(2, np.float32)
    np.savez(d / "good.npz", w=w, b=b)
    np.savez(d / "no_b.npz", w=w)
    np.savez(d / "extra.npz", w=w, b=b, c=b)
    np.savez(d / "shape.npz", w=w.T, b=b)
    np.savez(d / "nan.npz", w=w, b=np.array([1, np.nan], np.float32))
    np.save(d / "w.npy", w)
    np.save(d / "b.npy", b)
    shutil.copy(d / "w.npy", d / "one.npz")
    (d / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    cases = [
        ([f"params={d / 'no_b.npz'}"], ["input 'params'", "no_b.npz has no array 'b'"]),
        ([f"params={d / 'extra.npz'}"], ["extra.npz holds 'c', which is not a leaf of params"]),
        ([f"params={d / 'shape.npz'}"], ["input 'params/w' has shape (2, 3)", "(3, 2)",
                                         "shape.npz"]),
        ([f"params={d / 'nan.npz'}"], ["input 'params/b' of party 'bob' holds nan at index [1]"]),
        ([f"params={d / 'w.npy'}"], ["'params' is a tree of arrays: give an .npz holding b, w"]),
        ([f"params={d / 'one.npz'}"], ["one.npz holds one array, not one per leaf"]),
        ([f"params={d / 'junk.npz'}"], ["cannot read", "junk.npz as .npz"]),
        ([f"params={d / 'good.npz'}", f"params/w={d / 'w.npy'}"],
         ["input 'params/w' given twice: alone and in the .npz of 'params'"]),
        ([f"params/w={d / 'w.npy'}"], ["missing input(s) params/b (party bob)"]),
        ([], ["missing input(s) params (party bob, an .npz of leaves b, w)"]),
        ([f"params={d / 'good.npz'}", f"x={d / 'w.npy'}"], ["'x' belongs to party 'alice'"]),
        ([f"param={d / 'good.npz'}"], ["unknown input(s) param", "takes params, x"]),
    ]
    for inputs, needles in cases:
        args = ["run", d / "bundle", "--party", "bob", "--peers", sentinels.peers(),
                "--timeout", "1", *[x for i in inputs for x in ("--input", i)]]
        assert_one_line_error(run_main(capsys, *args), *needles)
        assert not sentinels.touched(), (inputs, "connected before rejecting the input")


def test_unreadable_input_file(work, tmp_path):
    """chmod 000: 'Permission denied' in one line (as root, without the DAC capabilities)."""
    d = work
    locked = tmp_path / "locked.npy"
    shutil.copy(d / "a.npy", locked)
    locked.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        probe = subprocess.run([setpriv, "--bounding-set", "-dac_override,-dac_read_search",
                                "cat", str(locked)], capture_output=True) if setpriv else None
        if probe is None or probe.returncode == 0:
            pytest.skip("root can read any file here (no setpriv to drop DAC capabilities)")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    s = Sentinels(["alice", "bob", "dealer"])
    try:
        res = subprocess.run(prefix + [sys.executable, "-m", "mixc", *map(str, alice(
            d, s, f"a={locked}"))], capture_output=True, text=True, timeout=60)
        assert_one_line_error(res, "locked.npy", "Permission denied")
        assert not s.touched()
    finally:
        s.close()


def test_bad_bundles(work, sentinels, capsys, tmp_path):
    d = work

    def copy(name):
        b = tmp_path / name
        shutil.copytree(d / "bundle", b)
        return b
    broken = copy("broken")
    text = (broken / "alice.mir").read_text().splitlines(keepends=True)
    text[6] = text[6].replace(" = ", " == ", 1)        # line 7
    (broken / "alice.mir").write_text("".join(text))
    edited = copy("edited")
    (edited / "alice.mir").write_text(
        (edited / "alice.mir").read_text().replace('masked operand (x - a)',
                                                   'masked operand (x + a)'))
    badjson = copy("badjson")
    (badjson / "manifest.json").write_text("{ not json")
    nomir = copy("nomir")
    (nomir / "alice.mir").unlink()
    nonutf8 = copy("nonutf8")
    raw = bytearray((nonutf8 / "alice.mir").read_bytes())
    second = raw.index(b"\n") + 1
    raw[second + 3] = 0xFF                               # line 2, column 4
    (nonutf8 / "alice.mir").write_bytes(bytes(raw))
    # loops: a body never closed, and a value of a body read after its "}"
    lines = (d / "bundle" / "alice.mir").read_text().splitlines(keepends=True)
    out = len(lines)                                     # the last line: output(%N) {...}
    assert lines[-1].startswith("output(%")
    result = lines[-1][len("output("):lines[-1].index(")")]
    unclosed = copy("unclosed")
    (unclosed / "alice.mir").write_text("".join(
        lines[:-1] + [f"loop({result}) {{captures=1, trip_count=1}} {{\n",
                      "  ^(%900: f32[3]@alice)\n"] + lines[-1:]))
    scoped = copy("scoped")
    (scoped / "alice.mir").write_text("".join(
        lines[:-1] + [f"%900: f32[3]@alice = loop({result}) {{captures=0, trip_count=1}} {{\n",
                      "  ^(%901: f32[3]@alice)\n", "  yield(%901)\n", "}\n",
                      lines[-1].replace(result, "%901", 1)]))
    a = f"a={d / 'a.npy'}"
    cases = [
        (alice(d, sentinels, a, bundle=broken), [r"alice.mir:7:", "expected"]),
        (alice(d, sentinels, a, bundle=edited), ["alice.mir", "edited after mixc build"]),
        (alice(d, sentinels, a, bundle=badjson), ["manifest.json", "not a valid mixc manifest"]),
        (alice(d, sentinels, a, bundle=nomir), ["no program for party 'alice'"]),
        (alice(d, sentinels, a, bundle=nonutf8), ["alice.mir:2:4:", "not UTF-8"]),
        (alice(d, sentinels, a, bundle=unclosed),
         [f"alice.mir:{out + 2}:", "unexpected end of input; expected '}' closing the body "
                                   f"of 'loop' opened on line {out}"]),
        (alice(d, sentinels, a, bundle=scoped),
         [f"alice.mir:{out + 4}:8: use of undefined value %901"]),
        (alice(d, sentinels, a, bundle=d / "a.npy"), ["a.npy", "not a directory"]),
        (["run", d / "bundle", "--party", "carol", "--peers", sentinels.peers()],
         ["built for parties alice, bob, dealer", "not 'carol'"]),
    ]
    for args, needles in cases:
        assert_one_line_error(run_main(capsys, *args), *needles)
        assert not sentinels.touched(), args
    # --local checks every party's program in the parent, before starting anyone
    for b, needle in ((broken, "alice.mir:7:"), (edited, "edited after mixc build")):
        res = run_main(capsys, "run", b, "--local", "--input", a, "--input", f"b={d / 'b.npy'}")
        assert_one_line_error(res, needle)


CONFIG_BAD = """\
domain: ["alice", "bob"]
device:
  - p1:
      type PYU
      domain: "alice"
"""

NOT_TRACING = f'''\
import mixc
from mixc import device, reveal

cluster = mixc.init_device({str(DEVICES)!r})
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


def mix(a, b):
    return a @ b


@mixc.program
def small(a: mixc.Input(p1, (4, 3)), b: mixc.Input(p2, (4, 3))):
    r = device(mpc)(mix)(a, b)
    return reveal(r, p1)
'''


def test_bad_program_files(work, capsys, tmp_path):
    d = work
    (tmp_path / "bad.devices").write_text(CONFIG_BAD)
    (tmp_path / "badcfg.py").write_text(
        PROGRAM.replace(repr(str(DEVICES)), repr(str(tmp_path / "bad.devices"))))
    (tmp_path / "notrace.py").write_text(NOT_TRACING)
    (tmp_path / "binary.py").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    (tmp_path / "folder.py").mkdir()
    (tmp_path / "program.txt").write_text(PROGRAM)
    (tmp_path / "noext").write_text(PROGRAM)
    cases = [
        (tmp_path / "badcfg.py", ["badcfg.py:", "bad.devices:4:12:", "expected ':'"]),
        (tmp_path / "notrace.py", ["notrace.py:14:", "dot_general", "(raised at",
                                    "notrace.py:9)"]),
        (tmp_path / "binary.py", ["binary.py", "not Python source"]),
        (tmp_path / "folder.py", ["folder.py", "not a file"]),
        (tmp_path / "program.txt", ["program.txt", "not a Python file"]),
        (tmp_path / "noext", ["noext", "not a Python file"]),
        (d / "a.npy", ["a.npy", "not a Python file"]),
    ]
    for path, needles in cases:
        out = tmp_path / "out"
        res = run_main(capsys, "build", path, "-o", out)
        assert_one_line_error(res, *needles)
        assert not out.exists(), path


def test_sample_as_process(work):
    """A few of the cases above through ``python -m mixc``: the same single line, exit 1."""
    d = work
    s = Sentinels(["alice", "bob", "dealer"])
    try:
        picked = [input_cases(d)[i] for i in (0, 4, 8)]
        procs = [(needles, subprocess.Popen(
            [sys.executable, "-m", "mixc", *map(str, alice(d, s, arg))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for arg, needles in picked]
        for needles, p in procs:
            out, err = p.communicate(timeout=60)
            assert_one_line_error(subprocess.CompletedProcess(p.args, p.returncode, out, err),
                                  *needles)
        assert not s.touched()
    finally:
        s.close()


# ---------------------------------------------------------------------------
# fuzz: mutations of alice.mir

ALPHABET = st.sampled_from(list('%:@=(){}[],"<>.#0123456789 \n\tabcdefuirxyz_-') +
                           ["\x00", "\u00e9", "\xff", "send", "recv", "u64", "f32", "arith",
                            "masked", "loc", "tag=", "%99", "to=", "\\"])


@st.composite
def mutations(draw, text):
    """(mutated text, description): delete / insert / replace / line edits / truncate."""
    lines = text.splitlines(keepends=True)
    kind = draw(st.sampled_from(["delete", "insert", "replace", "dup_line", "drop_line",
                                 "swap_lines", "truncate", "bytes"]))
    pos = draw(st.integers(0, len(text) - 1))
    if kind == "delete":
        n = draw(st.integers(1, 12))
        out = text[:pos] + text[pos + n:]
    elif kind == "insert":
        out = text[:pos] + "".join(draw(st.lists(ALPHABET, min_size=1, max_size=4))) + text[pos:]
    elif kind == "replace":
        out = text[:pos] + draw(ALPHABET) + text[pos + 1:]
    elif kind in ("dup_line", "drop_line", "swap_lines"):
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines) - 1))
        new = list(lines)
        if kind == "dup_line":
            new.insert(j, lines[i])
        elif kind == "drop_line":
            del new[i]
        else:
            new[i], new[j] = new[j], new[i]
        out = "".join(new)
    elif kind == "truncate":
        out = text[:pos]
    else:
        out = None      # raw bytes: see below
    return kind, pos, out


FUZZ_STATS = {"examples": 0, "line_col": 0, "edited": 0}


@pytest.fixture(scope="module")
def fuzz_bundle(work, tmp_path_factory):
    b = tmp_path_factory.mktemp("fuzz") / "bundle"
    shutil.copytree(work / "bundle", b)
    return b


def test_fuzz_party_ir(work, fuzz_bundle, capsys):
    d = work
    original = (fuzz_bundle / "alice.mir").read_text()
    original_bytes = original.encode()
    s = Sentinels(["alice", "bob", "dealer"])
    args = alice(d, s, f"a={d / 'a.npy'}", bundle=fuzz_bundle)
    from mixc.ir.parser import parse_module
    import re

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutations(original), st.binary(min_size=1, max_size=3))
    def check(mutation, junk):
        kind, pos, text = mutation
        if text is None:
            data = original_bytes[:pos] + junk + original_bytes[pos + 1:]
        else:
            data = text.encode("utf-8")
        if data == original_bytes:
            return
        (fuzz_bundle / "alice.mir").write_bytes(data)
        res = run_main(capsys, *args)
        line = assert_one_line_error(res, "alice.mir")
        assert not s.touched(), (kind, line)
        try:
            parse_module(data.decode("utf-8"), filename="alice.mir")
            parses = True
        except Exception:  # noqa: BLE001 - ParseError, or not UTF-8
            parses = False
        if parses:
            assert "edited after mixc build" in line, line
            FUZZ_STATS["edited"] += 1
        else:
            assert re.match(r"mixc: error: " + LINE_COL, line), line
            FUZZ_STATS["line_col"] += 1
        FUZZ_STATS["examples"] += 1

    try:
        check()
    finally:
        (fuzz_bundle / "alice.mir").write_text(original)
        s.close()
    assert FUZZ_STATS["line_col"] > 50, FUZZ_STATS
    print(f"fuzzed alice.mir: {FUZZ_STATS}")
