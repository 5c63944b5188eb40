"""Faults injected between real ``mixc run --party`` processes on loopback.

Each test starts alice, bob and the dealer as separate processes (and, for
network faults, ``faultproxy.py`` between alice and bob: alice's name sorts
first, so alice dials bob through the proxy), injects one fault, and checks
that every party still running exits non-zero within ``--timeout`` of the
fault with one ``mixc: error:`` line naming the peer and the op, no
traceback, and that no output file exists afterwards. (The dealer of these
programs may legitimately have finished its part -- every message delivered
and acknowledged -- before the fault; it then exits 0.) The SIGKILL case is
``test_cli.py::test_killed_peer_fails_alice_without_output``.
"""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faultproxy import free_ports, mixc_party, start_proxy, start_replay

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "examples" / "two_party.devices"
TIMEOUT = 5.0          # --timeout of every party
SLACK = 3.0            # process exit, abort and scheduling on a loaded machine

PROGRAMS = f'''
import mixc
from mixc import device, reveal

cluster = mixc.init_device({str(DEVICES)!r})
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


def chain(a, b, n):
    x = a * b
    for _ in range(n):
        x = x @ b
    return x


@mixc.program
def medium(a: mixc.Input(p1, (64, 64)), b: mixc.Input(p2, (64, 64))):
    r = device(mpc)(lambda a, b: chain(a, b, 3))(a, b)
    return {{"r1": reveal(r, p1), "r2": reveal(r, p2)}}


@mixc.program
def long(a: mixc.Input(p1, (256, 256)), b: mixc.Input(p2, (256, 256))):
    return {{"r1": reveal(device(mpc)(lambda a, b: chain(a, b, 120))(a, b), p1)}}
'''


def build(d, name):
    return subprocess.Popen([sys.executable, "-m", "mixc", "build", str(d / "progs.py"),
                             "--program", name, "-o", str(d / name)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=d)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    (d / "progs.py").write_text(PROGRAMS)
    builds = [build(d, "medium"), build(d, "long")]
    rng = np.random.default_rng(3)
    np.save(d / "a64.npy", rng.uniform(-0.5, 0.5, (64, 64)).astype(np.float32))
    np.save(d / "b64.npy", (0.5 * np.eye(64) + rng.uniform(-0.01, 0.01, (64, 64)))
            .astype(np.float32))
    np.save(d / "a256.npy", rng.uniform(-0.01, 0.01, (256, 256)).astype(np.float32))
    np.save(d / "b256.npy", np.eye(256, dtype=np.float32))
    if importlib.util.find_spec("cryptography") is not None:
        from mixc.tls import keygen
        keygen(d / "keys", ["alice", "bob", "dealer"])
    for b in builds:
        out, err = b.communicate(timeout=120)
        assert b.returncode == 0, err
    return d


def addresses(*names, host="127.0.0.1"):
    return {n: (host, p) for n, p in zip(names, free_ports(len(names), host))}


def start_three(d, bundle, *, alice_bob=None, session=None, timeout=TIMEOUT, tls=None,
                start=("dealer", "bob", "alice"), progress=("alice",)):
    """alice, bob, dealer of ``bundle``; alice reaches bob at ``alice_bob`` if given;
    the parties in ``progress`` print their progress lines."""
    peers = addresses("alice", "bob", "dealer")
    size = "64" if bundle == "medium" else "256"
    alice_peers = dict(peers)
    if alice_bob is not None:
        alice_peers["bob"] = ("127.0.0.1", alice_bob(peers["bob"]))
    spec = {
        "dealer": dict(peers=peers),
        "bob": dict(peers=peers, inputs=[f"b={d / f'b{size}.npy'}"], output=d / "out" / "bob"),
        "alice": dict(peers=alice_peers, inputs=[f"a={d / f'a{size}.npy'}"],
                      output=d / "out" / "alice"),
    }
    for name in progress:
        spec[name]["extra"] = ["--progress"]
    procs = {}
    for name in start:
        kw = spec[name]
        procs[name] = mixc_party(d / bundle, name, kw.pop("peers"), timeout=timeout,
                                 session=session, tls=tls, **kw)
    return procs, peers


def transcript(procs):
    return "\n".join(f"--- {p.name} (exit {p.proc.poll()}):\n{p.text()}" for p in procs.values())


def no_outputs(d):
    out = d / "out"
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not leftovers, leftovers


def check_failed(proc, since, peer, *needles, limit=TIMEOUT + SLACK):
    """``proc`` exits 1 within ``limit`` s of ``since`` with one error naming ``peer``."""
    rc = proc.wait(max(0.0, since + limit - time.monotonic()))
    assert rc is not None, f"{proc.name} still running {limit} s after the fault"
    text = proc.text()
    assert rc == 1, (proc.name, rc, text)
    assert "Traceback" not in text, text
    errors = proc.errors()
    assert len(errors) == 1, text
    line = errors[0]
    assert f"peer {peer!r} during " in line, line
    for needle in needles:
        assert needle in line, line
    return line, proc.ended - since


def check_dealer(proc, since, limit=TIMEOUT + SLACK):
    """The dealer exits within the limit: 0 if it had finished, else 1 naming a peer."""
    rc = proc.wait(max(0.0, since + limit - time.monotonic()))
    assert rc is not None, "the dealer hangs"
    text = proc.text()
    assert "Traceback" not in text, text
    if rc != 0:
        errors = proc.errors()
        assert rc == 1 and len(errors) == 1 and "peer '" in errors[0], text
    return rc


def cleanup(*groups):
    for group in groups:
        for p in (group.values() if isinstance(group, dict) else group):
            p.kill()


# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session1(work):
    """A clean run through a recording proxy (session 5e551011): -> the recording."""
    d = work
    holder = {}

    def via_proxy(bob_addr):
        holder["proxy"], port = start_proxy(bob_addr, "none", record=d / "session1.bin")
        return port
    procs, _ = start_three(d, "medium", alice_bob=via_proxy, session="5e551011")
    try:
        for p in procs.values():
            assert p.wait(30) == 0, transcript(procs)
        r1 = np.load(d / "out" / "alice" / "r1.npy")
    finally:
        cleanup(procs, [holder["proxy"]])
        for f in (d / "out").rglob("*.npy"):
            f.unlink()
    return d / "session1.bin", r1


def test_run_through_proxy_is_clean(work, session1):
    """The proxy itself changes nothing: a run through it succeeds (and is recorded)."""
    recording, r1 = session1
    a, b = np.load(work / "a64.npy"), np.load(work / "b64.npy")
    want = a * b
    for _ in range(3):
        want = want @ b
    np.testing.assert_allclose(r1, want, atol=2e-3)
    assert recording.stat().st_size > 64 * 64 * 8


GONE = ("peer aborted (error 2: lost a peer", "without goodbye", "connection reset",
        "broken pipe")


@pytest.mark.parametrize("fault, bob_says, alice_says", [
    # bob reads what the proxy did; alice hears from bob (his abort frame) or, when
    # the proxy cut her connection too, sees it go
    ("reset", ("connection reset", "broken pipe"), ("connection reset", "broken pipe")),
    ("garble", ("malformed frame: bad magic",), GONE),
    ("truncate", ("malformed frame: truncated payload",), GONE),
    ("duplicate", ("duplicate message tag",), GONE),
], ids=["reset", "garble", "truncate", "duplicate"])
def test_network_fault(work, fault, bob_says, alice_says):
    d = work
    holder = {}

    def via_proxy(bob_addr):
        holder["proxy"], port = start_proxy(bob_addr, fault, at=3)
        return port
    procs, _ = start_three(d, "medium", alice_bob=via_proxy)
    proxy = holder["proxy"]
    try:
        fired, line = proxy.wait_line(f"fault {fault}", 30)
        bob_line, bob_took = check_failed(procs["bob"], fired, "alice")
        alice_line, alice_took = check_failed(procs["alice"], fired, "bob")
        assert any(x in bob_line for x in bob_says), bob_line
        assert any(x in alice_line for x in alice_says), alice_line
        check_dealer(procs["dealer"], fired)
        no_outputs(d)
        # the op is named: a recv/send of the program at its source line, or the final
        # flush (the key agreement sends nothing, so it cannot fail here)
        for ln in (bob_line, alice_line):
            assert any(op in ln for op in ("during recv #", "during send #", "during close")), ln
    finally:
        cleanup(procs, [proxy])


def test_garbled_tls_record(work):
    """A byte of an encrypted record flipped on the wire: TLS catches what framing cannot."""
    d = work
    if not (d / "keys").exists():
        pytest.skip("needs the cryptography package")
    holder = {}

    def via_proxy(bob_addr):
        holder["proxy"], port = start_proxy(bob_addr, "garble", tls=True)
        return port
    procs, _ = start_three(d, "medium", alice_bob=via_proxy, tls=d / "keys")
    proxy = holder["proxy"]
    try:
        fired, _ = proxy.wait_line("fault garble", 30)
        check_failed(procs["bob"], fired, "alice", "TLS error while receiving")
        check_failed(procs["alice"], fired, "bob")
        check_dealer(procs["dealer"], fired)
        no_outputs(d)
    finally:
        cleanup(procs, [proxy])


def test_proxy_killed(work):
    """The path between alice and bob dies (SIGKILL of the proxy mid-run)."""
    d = work
    holder = {}

    def via_proxy(bob_addr):
        holder["proxy"], port = start_proxy(bob_addr, "stall", at=3)
        return port
    procs, _ = start_three(d, "medium", alice_bob=via_proxy)
    proxy = holder["proxy"]
    try:
        proxy.wait_line("fault stall", 30)
        time.sleep(0.2)
        proxy.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        check_failed(procs["bob"], killed, "alice")
        check_failed(procs["alice"], killed, "bob")
        check_dealer(procs["dealer"], killed)
        no_outputs(d)
    finally:
        cleanup(procs, [proxy])


def test_stalled_peer_sigstop(work):
    """bob freezes (SIGSTOP) mid-run: alice times out naming bob and the op it waited in."""
    d = work
    timeout = 3.0
    procs, _ = start_three(d, "long", timeout=timeout)
    try:
        alice = procs["alice"]
        alice.wait_line("[alice]", 30)          # connected, keys agreed, computing
        procs["bob"].proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        assert alice.proc.poll() is None, "the run finished before bob was stopped"
        line, took = check_failed(alice, stopped, "bob", f"timed out after {timeout:g} s",
                                  "during recv #", limit=timeout + SLACK)
        assert took >= timeout - 0.5, took       # it did wait for the stalled peer
        rc = check_dealer(procs["dealer"], stopped, limit=timeout + SLACK + 2)
        if rc:
            assert "'bob'" in procs["dealer"].errors()[0]
        no_outputs(d)
    finally:
        cleanup(procs)


def test_old_session_replayed(work, session1):
    """A party of an earlier run (session 1, recorded) connects to bob's run (session 2)."""
    d = work
    procs, peers = start_three(d, "medium", session="5e551012", start=("dealer", "bob"))
    replay = start_replay(peers["bob"], d / "session1.bin")
    try:
        t, verdict = replay.wait_line("verdict", 20)
        assert "refused" in verdict and "session id mismatch" in verdict, verdict
        line, _ = check_failed(procs["bob"], t, "alice", "during connect", "session id mismatch",
                               "'5e551011'", "'5e551012'")
        # the real alice arrives too late: bob is gone, so she fails within her timeout
        start = time.monotonic()
        alice = mixc_party(d / "medium", "alice", peers, inputs=[f"a={d / 'a64.npy'}"],
                           output=d / "out" / "alice", timeout=2, session="5e551012")
        procs["alice"] = alice
        check_failed(alice, start, "bob", "during connect", limit=2 + SLACK + 2)
        check_dealer(procs["dealer"], t, limit=TIMEOUT + SLACK + 2)
        no_outputs(d)
    finally:
        cleanup(procs, [replay])


# ---------------------------------------------------------------------------
# the link mechanisms the CLI relies on, in-process


def _pair(timeout=5.0):
    import socket as _socket
    from mixc.runtime.links import TcpLink
    a, b = _socket.socketpair()
    return TcpLink("alice", {"bob": a}, timeout=timeout), TcpLink("bob", {"alice": b},
                                                                   timeout=timeout)


def test_abort_tells_the_peer_the_code_and_op_only():
    from mixc.errors import NumericError, PeerError
    from mixc.runtime.links import abort_code
    alice, bob = _pair()
    secret = "value 0.123456 of input 'a' at [3, 4] is out of range"
    try:
        alice.abort(abort_code(NumericError(secret)), "mul at prog.py:12")
        with pytest.raises(PeerError) as ei:
            bob.recv("alice", 1, op="recv x")
        assert str(ei.value) == ("peer 'alice' during recv x: peer aborted (error 3: numeric "
                                 "error, in its mul at prog.py:12; the reason is in its own log) "
                                 "(waiting for tag 1)")
        assert "0.123456" not in str(ei.value)
    finally:
        alice.close()
        bob.close()


def test_failing_party_keeps_its_reason_and_peers_get_none(work):
    """bob fails mid-run (SIGINT: interrupted): alice learns the code and bob's op,
    bob's own stderr keeps the reason."""
    d = work
    procs, _ = start_three(d, "long", timeout=10, progress=("alice", "bob"))
    try:
        alice = procs["alice"]
        alice.wait_line("[alice]", 30)          # connected and computing
        procs["bob"].wait_line("[bob]", 30)     # bob too: not still connecting to the dealer
        procs["bob"].proc.send_signal(signal.SIGINT)
        since = time.monotonic()
        line, _ = check_failed(alice, since, "bob", "peer aborted (error 5: interrupted")
        assert "the reason is in its own log" in line and ", in its " in line, line
        bob = procs["bob"]
        assert bob.wait(10) == 1, bob.text()
        assert bob.errors() == ["mixc: error: interrupted"], bob.text()
        check_dealer(procs["dealer"], since)
        no_outputs(d)
    finally:
        cleanup(procs)


def test_close_reports_undelivered_messages():
    """A peer that never reads: close() gives up after the timeout and says so."""
    import socket as _socket
    from mixc.runtime.links import TcpLink
    a, b = _socket.socketpair()
    alice = TcpLink("alice", {"bob": a}, timeout=0.5)
    try:
        alice.send("bob", 1, np.zeros(4 << 20, np.uint64))    # 32 MiB: more than buffers hold
        start = time.monotonic()
        undelivered = alice.close()
        assert time.monotonic() - start < 3
        assert "bob" in undelivered and "timed out after 0.5 s" in undelivered["bob"]
    finally:
        b.close()


def test_close_after_a_clean_exchange_reports_nothing():
    alice, bob = _pair()
    alice.send("bob", 1, np.arange(10))
    assert np.array_equal(bob.recv("alice", 1), np.arange(10))
    assert alice.close() == {} and bob.close() == {}


def test_close_after_the_peer_said_goodbye_reports_nothing_even_if_reading_lags():
    """Bob's goodbye hits a closed socket (broken pipe) before his receiver has
    read Alice's goodbye -- as on a loaded machine. Alice finished first: bob
    owes her nothing, so close() must not report a failure."""
    import socket as _socket
    import threading
    from mixc.runtime.links import TcpLink

    lagging = threading.Event()

    class LaggingSocket(_socket.socket):
        def recv_into(self, *args, **kwargs):
            n = super().recv_into(*args, **kwargs)
            if lagging.is_set():
                time.sleep(0.5)
            return n

    a, b = _socket.socketpair()
    bob_sock = LaggingSocket(b.family, b.type, fileno=b.detach())
    alice = TcpLink("alice", {"bob": a}, timeout=5.0)
    bob = TcpLink("bob", {"alice": bob_sock}, timeout=5.0)
    alice.send("bob", 1, np.arange(10))
    assert np.array_equal(bob.recv("alice", 1), np.arange(10))
    lagging.set()
    assert alice.close() == {}
    assert bob.close() == {}
