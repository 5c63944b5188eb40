"""``mixc run --local`` checks a new bundle while its parties start (issue 11's start-up
target): the parties start and connect meanwhile, and none runs an op before the
parent's verdict, which brings the program it checked.

- a clean bundle new to this host (an empty cache) runs, right, and is remembered;
- the child's side of the verdict: the program the parent derived (sent whole, while the
  parent still checks, not parsed again) runs only after ``ok``; without ``ok`` (the check
  failed) it runs nothing;
- an edited bundle is refused by the overlapped check with its file:line and no party
  writes an output (tests/test_leaks.py covers every edited bundle of the corpus).

``mixc run --party`` alone on its host (``RunCheck.start``): it derives the programs and
compares the files itself (an edit is refused before it connects) while a forked child
interprets every message; the party connects meanwhile and runs no op before the child's
verdict. The bundle is remembered only once both passed.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mixc.bundle import program_hash, text_hash
from mixc.cli import _await_verdict
from mixc.errors import MixcError
from mixc.ir.parser import parse_module
from mixc.ir.printer import print_module

from conftest import write_leaky_program
from faultproxy import free_ports


def _mixc(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "mixc", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("startup")
    cache = d / "cache"   # `mixc build` remembers its bundle: build with another cache
    env = dict(os.environ, XDG_CACHE_HOME=str(d / "build_cache"))
    done = _mixc("build", write_leaky_program(d), "-o", d / "clean", cwd=d, env=env)
    assert done.returncode == 0, done.stderr
    rng = np.random.default_rng(1)
    a, b = (rng.uniform(-1, 1, 3).astype(np.float32) for _ in range(2))
    np.save(d / "a.npy", a)
    np.save(d / "b.npy", b)
    return d, cache, a, b


def _remembered(cache):
    folder = cache / "mixc" / "verified"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_new_bundle_is_checked_while_the_parties_start(built):
    d, cache, a, b = built
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    assert not _remembered(cache)
    run = _mixc("run", "clean", "--local", "--input", "a=a.npy", "--input", "b=b.npy",
                "--output", "out", cwd=d, env=env)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(d / "out" / "alice" / "c.npy"), a * b + a, atol=1e-3)
    want = np.zeros(3, np.float32)
    for _ in range(3):
        want = want * b + a
    np.testing.assert_allclose(np.load(d / "out" / "bob" / "d.npy"), want, atol=1e-3)
    assert len(_remembered(cache)) == 1


def test_an_edited_bundle_is_refused_before_any_party_runs(built, tmp_path):
    d, _, _, _ = built
    _edited_copy(d, tmp_path)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    run = _mixc("run", "edited", "--local", "--input", f"a={d / 'a.npy'}",
                "--input", f"b={d / 'b.npy'}", "--output", "out", cwd=tmp_path, env=env)
    assert run.returncode != 0
    assert "edited/dealer.mir:7: not what the global program compiles to" in run.stderr, \
        run.stderr
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*")), "a party program ran"
    assert not _remembered(tmp_path / "cache")


def _verdict(data):
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


def test_a_party_runs_only_the_program_the_parent_checked():
    """The program comes first (handed over while the parent checks), ``ok`` after it."""
    program = parse_module(PROGRAM)
    sent = pickle.dumps(program)
    got = _await_verdict(_verdict(sent + b"ok\n"))
    assert print_module(got) == PROGRAM
    for refused in (b"", b"ok\n", sent, sent + b"no\n", sent[:-5], b"ok\n" + sent):
        with pytest.raises(MixcError, match="the bundle check did not pass"):
            _await_verdict(_verdict(refused))


def test_a_checked_program_is_handed_over_whole(built):
    """What the parent sends is what it checked: the pickled Module prints as the file."""
    from mixc.disclosure import check_bundle
    d, _, _, _ = built
    checked = check_bundle(d / "clean")
    for party, program in checked.programs.items():
        got = pickle.loads(pickle.dumps(program, protocol=pickle.HIGHEST_PROTOCOL))
        assert print_module(got) == (d / "clean" / f"{party}.mir").read_text()


PROGRAM = """module "t:alice"
parties "alice"
device p1 = PYU("alice")
%0: f32[3]@alice = input() {dtype="f32", name="a", shape=(3,)}
%1: f32[3]@alice = add(%0, %0)
output(%1) {name="c"}
"""


def test_parties_on_one_host_check_a_new_bundle_once(built, tmp_path, monkeypatch):
    """While one process of this user checks a bundle (its lock held), another reads its
    party file meanwhile and takes the verdict once remembered; if none is remembered
    (that check failed), it checks the bundle itself."""
    import fcntl
    import threading

    from mixc.disclosure import RunCheck, _cache_dir, remember
    d, _, _, _ = built
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    alone = RunCheck(d / "clean")
    checked, got = alone.run_once_per_host(lambda: pytest.fail("nobody else checks"))
    assert checked is not None and got is None and _remembered(tmp_path / "cache")
    for passed in (True, False):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache_{passed}"))
        pending = RunCheck(d / "clean")
        _cache_dir().mkdir(parents=True)
        with open(_cache_dir() / f"{pending.key}.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # a peer's process, checking
            read = threading.Event()
            result = []
            waiter = threading.Thread(target=lambda: result.append(
                pending.run_once_per_host(lambda: read.set() or "parsed")))
            waiter.start()
            assert read.wait(60)
            waiter.join(0.5)
            assert waiter.is_alive(), "did not wait for the peer's check"
            if passed:
                remember(d / "clean", pending.key)
        waiter.join(120)
        checked, got = result[0]
        if passed:
            assert (checked, got) == (None, "parsed")
        else:
            assert checked is not None and got is None
            assert print_module(checked.programs["alice"]) == \
                (d / "clean" / "alice.mir").read_text()


def test_a_check_held_too_long_is_not_waited_for(built, tmp_path, monkeypatch):
    import fcntl

    from mixc.disclosure import RunCheck, _cache_dir
    d, _, _, _ = built
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pending = RunCheck(d / "clean")
    _cache_dir().mkdir(parents=True)
    with open(_cache_dir() / f"{pending.key}.lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # a stuck process, never done
        checked, got = pending.run_once_per_host(lambda: "parsed", wait=0.2)
    assert checked is not None and got is None


def _edited_copy(d, tmp_path):
    """The clean bundle with a constant inserted at dealer.mir:7, hashes redone."""
    shutil.copytree(d / "clean", tmp_path / "edited")
    f = tmp_path / "edited" / "dealer.mir"
    lines = f.read_text().splitlines(keepends=True)
    lines.insert(6, '%999: u64[]@dealer:public = constant() {value=array<u64[]>"AAAAAAAAAAA="}\n')
    f.write_text("".join(lines))
    manifest = json.loads((tmp_path / "edited" / "manifest.json").read_text())
    texts = {p: (tmp_path / "edited" / f"{p}.mir").read_text() for p in manifest["parties"]}
    manifest["party_hashes"] = {p: text_hash(t) for p, t in texts.items()}
    manifest["hash"] = program_hash(texts)
    (tmp_path / "edited" / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "edited"


@pytest.mark.filterwarnings("ignore:os.fork")  # JAX loaded by other tests; the child runs no JAX
def test_a_lone_party_checks_while_it_connects(built, tmp_path, monkeypatch):
    from mixc import disclosure
    d, _, _, _ = built
    monkeypatch.setattr(disclosure, "_spare_core", lambda: True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    programs, finish = disclosure.RunCheck(d / "clean").start()
    for party, program in programs.items():
        assert print_module(program) == (d / "clean" / f"{party}.mir").read_text()
    finish()
    assert len(_remembered(tmp_path / "cache")) == 1


@pytest.mark.filterwarnings("ignore:os.fork")  # JAX loaded by other tests; the child runs no JAX
def test_a_lone_party_refuses_an_edit_before_it_connects(built, tmp_path, monkeypatch):
    """Refused by ``start`` itself, and not remembered even though the forked child's
    check of the compiler's programs passes (here surely before the files are compared)."""
    import time

    from mixc import disclosure
    from mixc.errors import VerifyError
    d, _, _, _ = built
    edited = _edited_copy(d, tmp_path)
    monkeypatch.setattr(disclosure, "_spare_core", lambda: True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    compare = disclosure._Derivation.compare_files

    def slow_compare(self):
        time.sleep(1.0)
        return compare(self)

    monkeypatch.setattr(disclosure._Derivation, "compare_files", slow_compare)
    with pytest.raises(VerifyError, match=r"edited/dealer\.mir:7: not what the global program"):
        disclosure.RunCheck(edited, label="edited").start()
    time.sleep(0.5)
    assert not _remembered(tmp_path / "cache")


@pytest.mark.filterwarnings("ignore:os.fork")
@pytest.mark.parametrize("spare_core", [True, False])
def test_a_lone_party_takes_the_checks_refusal(built, tmp_path, monkeypatch, spare_core):
    """What ``check`` refuses (in the forked child, or here without a spare core) reaches
    the caller from ``finish`` (or ``start``); nothing is remembered."""
    from mixc import disclosure

    def refuse(*args, **kwargs):
        raise disclosure.Disclosure("clean/bob.mir:9: a refusal")

    d, _, _, _ = built
    monkeypatch.setattr(disclosure, "_spare_core", lambda: spare_core)
    monkeypatch.setattr(disclosure, "check", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(disclosure.Disclosure, match="clean/bob.mir:9: a refusal"):
        _programs, finish = disclosure.RunCheck(d / "clean").start()
        finish()
    assert not _remembered(tmp_path / "cache")


def test_party_programs_numbered_in_place_print_as_copies(built):
    """``partition.split(consume=True)`` (what a run checks with: no copy) prints exactly
    as the copying split (what ``mixc build`` writes), loops included."""
    from mixc.disclosure import compile_parties
    d, _, _, _ = built
    text = (d / "clean" / "after" / "select_protocols.mir").read_text()
    copied, _ = compile_parties(parse_module(text))
    consumed, lowered = compile_parties(parse_module(text), keep_lowered=False)
    assert lowered is None and sorted(copied) == sorted(consumed)
    assert any(n.op == "loop" for n in consumed["alice"].nodes)
    for party in copied:
        assert print_module(consumed[party]) == print_module(copied[party])
        assert consumed[party].next_id == copied[party].next_id


def test_parties_each_alone_on_a_host_check_and_run(built, tmp_path):
    """Three ``--party`` processes, each with its own empty cache (so each checks, as on
    three hosts, its check's last step forked beside its connecting): right outputs, and
    each remembers the bundle."""
    d, _, a, b = built
    ports = free_ports(3)
    peers = ",".join(f"{p}=127.0.0.1:{port}" for p, port in zip(("alice", "bob", "dealer"), ports))
    given = {"alice": ["--input", "a=a.npy"], "bob": ["--input", "b=b.npy"], "dealer": []}
    procs = {p: subprocess.Popen(
        [sys.executable, "-m", "mixc", "run", "clean", "--party", p, "--peers", peers,
         "--output", str(tmp_path / "out"), *given[p]], cwd=d, text=True,
        env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / f"cache_{p}")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in given}
    for p, proc in procs.items():
        _out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{p}: {err}"
        assert [f for f in _remembered(tmp_path / f"cache_{p}") if f.suffix != ".lock"], p
    np.testing.assert_allclose(np.load(tmp_path / "out" / "c.npy"), a * b + a, atol=1e-3)



REFUSING_MIXC = """
import sys
from mixc import cli, disclosure
def refuse(*args, **kwargs):
    raise disclosure.Disclosure("clean/bob.mir:9: a refusal")
disclosure.check = refuse
disclosure._spare_core = lambda: True
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_refusal_after_connecting_stops_every_party(built, tmp_path):
    """The forked check refuses once alice has connected: she runs no op, says why, and
    bob stops on her abort code; nobody writes an output (the dealer, which only sends,
    may have sent all it had before)."""
    d, _, _, _ = built
    ports = free_ports(3)
    peers = ",".join(f"{p}=127.0.0.1:{port}" for p, port in zip(("alice", "bob", "dealer"), ports))
    given = {"alice": ["--input", "a=a.npy"], "bob": ["--input", "b=b.npy"], "dealer": []}
    procs = {p: subprocess.Popen(
        [sys.executable, *(["-c", REFUSING_MIXC] if p == "alice" else ["-m", "mixc"]),
         "run", "clean", "--party", p, "--peers", peers, "--timeout", "30",
         "--output", str(tmp_path / "out"), *given[p]], cwd=d, text=True,
        env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / f"cache_{p}")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in given}
    errors = {p: proc.communicate(timeout=180)[1] for p, proc in procs.items()}
    assert procs["alice"].returncode != 0 and procs["bob"].returncode != 0, errors
    assert "clean/bob.mir:9: a refusal" in errors["alice"], errors["alice"]
    assert "peer 'alice'" in errors["bob"] and "refused the program" in errors["bob"], errors
    assert not any(f.is_file() for f in (tmp_path / "out").rglob("*")), "a party wrote output"
    assert not [f for f in _remembered(tmp_path / "cache_alice") if f.suffix != ".lock"]
