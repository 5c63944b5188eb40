"""The ``mixc`` command line, run as ``python -m mixc`` in subprocesses."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from faultproxy import free_ports

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "examples" / "two_party.devices"

PROGRAM = f'''
import jax.numpy as jnp
from jax import lax
import mixc
from mixc import device, reveal

cluster = mixc.init_device({str(DEVICES)!r})
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


def mix(a, b):
    # (a * b).sum(axis=0) as a loop: every party process runs a loop op, over TCP and TLS
    rows = lax.fori_loop(0, 4, lambda i, acc: acc + a[i] * b[i], jnp.zeros(3))
    return rows + (a @ b.T)[:3, :3].sum(axis=1)


@mixc.program
def small(a: mixc.Input(p1, (4, 3)), b: mixc.Input(p2, (4, 3))):
    r = device(mpc)(mix)(a, b)
    return {{"r1": reveal(r, p1), "r2": reveal(r, p2)}}
'''

BIG = f'''
import mixc
from mixc import device, reveal

cluster = mixc.init_device({str(DEVICES)!r})
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


def chain(a, b):
    x = a
    for _ in range(60):
        x = x @ b
    return x


@mixc.program
def big(a: mixc.Input(p1, (512, 512)), b: mixc.Input(p2, (512, 512))):
    return reveal(device(mpc)(chain)(a, b), p1)
'''


def mixc_cmd(*args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "mixc", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def mixc_popen(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "mixc", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def expected(a, b):
    return (a * b).sum(axis=0) + (a @ b.T)[:3, :3].sum(axis=1)


def free_peers(*names):
    return ",".join(f"{n}=127.0.0.1:{p}" for n, p in zip(names, free_ports(len(names))))


def assert_one_line_error(res, *needles, code=1):
    assert res.returncode == code, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mixc: error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "small.py").write_text(PROGRAM)
    rng = np.random.default_rng(7)
    a = rng.uniform(-2, 2, (4, 3)).astype(np.float32)
    b = rng.uniform(-2, 2, (4, 3)).astype(np.float32)
    np.save(d / "a.npy", a)
    np.save(d / "b.npy", b)
    np.savetxt(d / "a.csv", a, delimiter=",", fmt="%.9g")
    np.savetxt(d / "b.csv", b, delimiter=",", fmt="%.9g")
    np.save(d / "a_wrong.npy", np.zeros((3, 4), np.float32))
    res = mixc_cmd("build", d / "small.py", "-o", d / "bundle", cwd=d)
    assert res.returncode == 0, res.stderr
    return d, a, b


def test_build_writes_bundle(work):
    d, _, _ = work
    out = d / "bundle"
    for f in ["global.mir", "alice.mir", "bob.mir", "dealer.mir", "graph.dot", "audit.txt",
              "manifest.json"]:
        assert (out / f).is_file(), f
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"] == {"r1": "alice", "r2": "bob"}
    assert "digraph" in (out / "graph.dot").read_text()


def test_build_default_dir_and_summary(work):
    d, _, _ = work
    res = mixc_cmd("build", "small.py", "--cost-report", cwd=d)
    assert res.returncode == 0, res.stderr
    assert (d / "build" / "small" / "manifest.json").is_file()
    assert "alice" in res.stdout and "r1 -> alice" in res.stdout
    assert "total" in res.stdout and "dot_general" in res.stdout   # the cost table


def test_show_and_audit(work):
    d, _, _ = work
    b = d / "bundle"
    runs = [(mixc_popen("show", b, "--party", "alice"), b / "alice.mir"),
            (mixc_popen("show", b, "--after", "lower"), b / "after" / "lower.mir"),
            (mixc_popen("show", b), b / "global.mir")]
    for p, f in runs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out == f.read_text()
    assert "dealer" in (b / "audit.txt").read_text()
    # mixc audit derives the audit from the party programs themselves (mixc.disclosure):
    # for an unedited bundle, the stored audit, then what each party learns from them
    audit = mixc_cmd("audit", b)
    assert audit.returncode == 0, audit.stderr
    assert audit.stdout.startswith((b / "audit.txt").read_text().rstrip("\n"))
    assert "what each party learns (derived from the party programs):" in audit.stdout


def test_run_local_npy_and_csv(work):
    d, a, b = work
    want = expected(a, b)
    res = mixc_cmd("run", d / "bundle", "--local", "--input", f"a={d / 'a.npy'}",
                   "--input", f"b={d / 'b.csv'}", "--output", d / "local_out", "--timeout", 30)
    assert res.returncode == 0, res.stderr
    r1 = np.load(d / "local_out" / "alice" / "r1.npy")
    r2 = np.load(d / "local_out" / "bob" / "r2.npy")
    np.testing.assert_allclose(r1, want, atol=1e-3)
    np.testing.assert_allclose(r2, want, atol=1e-3)
    # without --output the values are printed
    res = mixc_cmd("run", d / "bundle", "--local", "--input", f"a={d / 'a.csv'}",
                   "--input", f"b={d / 'b.npy'}", "--timeout", 30)
    assert res.returncode == 0, res.stderr
    assert "r1" in res.stdout and "r2" in res.stdout and "mixc audit" in res.stdout


def test_parties_by_hand(work):
    d, a, b = work
    peers = free_peers("alice", "bob", "dealer")
    common = ["--peers", peers, "--timeout", 30]
    procs = {
        "dealer": mixc_popen("run", d / "bundle", "--party", "dealer", *common),
        "bob": mixc_popen("run", d / "bundle", "--party", "bob", "--input", f"b={d / 'b.npy'}",
                          "--output", d / "hand" / "bob", *common),
        "alice": mixc_popen("run", d / "bundle", "--party", "alice", "--input",
                            f"a={d / 'a.csv'}", "--output", d / "hand" / "alice", *common),
    }
    for name, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (name, err)
    want = expected(a, b)
    np.testing.assert_allclose(np.load(d / "hand" / "alice" / "r1.npy"), want, atol=1e-3)
    np.testing.assert_allclose(np.load(d / "hand" / "bob" / "r2.npy"), want, atol=1e-3)
    assert not (d / "hand" / "alice" / "r2.npy").exists()


def _error_cases(d):
    (d / "broken.py").write_text("import mixc\n\nx = (1,\ny = 2\n")
    (d / "raises.py").write_text("import mixc\n\n\ndef f():\n    return 1 / 0\n\n\nf()\n")
    (d / "empty.py").write_text("x = 1\n")
    bundle = d / "bundle"
    peers = free_peers("alice", "bob", "dealer")
    return [
        (["run", bundle, "--local", "--input", f"a={d / 'a.npy'}"], ["missing", "b"]),
        (["run", bundle, "--local", "--input", f"a={d / 'a.npy'}", "--input", f"b={d / 'b.npy'}",
          "--input", f"c={d / 'a.npy'}"], ["unknown input", "c"]),
        (["run", bundle, "--local", "--input", f"a={d / 'a_wrong.npy'}",
          "--input", f"b={d / 'b.npy'}"], ["'a'", "shape", "(3, 4)", "(4, 3)"]),
        (["run", bundle, "--party", "alice", "--peers", peers, "--input", f"a={d / 'nope.npy'}"],
         ["nope.npy"]),
        (["run", d, "--local"], ["not a mixc bundle"]),
        (["run", bundle, "--party", "carol", "--peers", peers], ["carol", "alice, bob"]),
        (["run", bundle, "--party", "alice", "--peers", peers, "--input", f"b={d / 'b.npy'}"],
         ["'b'", "bob"]),
        (["build", d / "broken.py"], ["broken.py:3", "SyntaxError"]),
        (["build", d / "raises.py"], ["raises.py:5", "ZeroDivisionError"]),
        (["build", d / "empty.py"], ["no mixc.program"]),
        (["build", d / "missing.py"], ["missing.py"]),
        (["build", d / "a.npy"], ["not a Python file"]),
        (["build", d / "small.py", "--passes", "place,bogus"], ["bogus", "lower"]),
        (["show", bundle, "--after", "bogus"], ["bogus", "insert_transfers"]),
        (["show", bundle, "--party", "zed"], ["zed"]),
        (["audit", d / "nowhere"], ["nowhere"]),
    ]


def test_user_errors_are_one_line_in_process(work, capsys):
    """Every user error: one ``mixc: error:`` line, exit 1 (in-process: the CLI's main)."""
    from mixc.cli import main
    d, _, _ = work
    for args, needles in _error_cases(d):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert_one_line_error(subprocess.CompletedProcess(args, code, out, err), *needles)


def test_user_errors_are_one_line(work):
    """The same through ``python -m mixc`` for a sample of them, and a usage error."""
    d, _, _ = work
    cases = _error_cases(d)
    picked = [cases[i] for i in (0, 2, 4, 5, 7)]
    procs = [(args, needles, mixc_popen(*args, cwd=d)) for args, needles in picked]
    usage = mixc_popen("run", d / "bundle")
    for args, needles, p in procs:
        out, err = p.communicate(timeout=60)
        assert_one_line_error(subprocess.CompletedProcess(args, p.returncode, out, err), *needles)
    out, err = usage.communicate(timeout=60)
    assert usage.returncode == 2 and "Traceback" not in err


def test_debug_shows_traceback(work):
    d, _, _ = work
    res = mixc_cmd("--debug", "build", d / "missing.py")
    assert res.returncode == 1
    res = mixc_cmd("build", d / "raises.py", "--debug")
    assert res.returncode == 1 and "Traceback" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("mixc: error: ")


def _watch(stream, buf):
    for chunk in iter(lambda: stream.read(1), ""):
        buf.append(chunk)


def test_killed_peer_fails_alice_without_output(work):
    d, _, _ = work
    (d / "big.py").write_text(BIG)
    res = mixc_cmd("build", d / "big.py", "-o", d / "big", cwd=d)
    assert res.returncode == 0, res.stderr
    rng = np.random.default_rng(1)
    np.save(d / "ba.npy", rng.uniform(-0.01, 0.01, (512, 512)).astype(np.float32))
    np.save(d / "bb.npy", np.eye(512, dtype=np.float32))
    out = d / "big_out"
    peers = free_peers("alice", "bob", "dealer")
    common = ["--peers", peers, "--timeout", 10]
    dealer = mixc_popen("run", d / "big", "--party", "dealer", *common)
    bob = mixc_popen("run", d / "big", "--party", "bob", "--input", f"b={d / 'bb.npy'}", *common)
    alice = mixc_popen("run", d / "big", "--party", "alice", "--input", f"a={d / 'ba.npy'}",
                       "--output", out, "--progress", *common)
    try:
        err = []
        threading.Thread(target=_watch, args=(alice.stderr, err), daemon=True).start()
        deadline = time.monotonic() + 30
        while "[alice]" not in "".join(err):   # alice is connected and computing
            assert alice.poll() is None and time.monotonic() < deadline, "".join(err)
            time.sleep(0.05)
        time.sleep(0.5)
        assert alice.poll() is None, "the program finished before bob was killed"
        bob.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        alice.wait(timeout=30)
        took = time.monotonic() - killed
        time.sleep(0.1)
        text = "".join(err)
        assert alice.returncode == 1, text
        assert took < 10, took
        assert "Traceback" not in text
        lines = text.replace("\x1b[K", "").replace("\r", "\n").splitlines()
        line = [ln for ln in lines if ln.startswith("mixc: error:")]
        assert len(line) == 1 and "'bob'" in line[0], text
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    finally:
        for p in (alice, bob, dealer):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
