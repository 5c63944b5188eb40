"""Tests of mixc.runtime.links: the in-process hub and the TCP link."""

import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import numpy as np
import pytest

from faultproxy import free_ports
from mixc.errors import PeerError
from mixc.runtime import links
from mixc.runtime.links import InProcessHub, TcpLink
from mixc.runtime.session_keys import Ephemeral, session_id

DTYPES = [np.uint64, np.int64, np.int32, np.float64, np.float32, np.bool_, np.uint8, np.uint32]
SHAPES = [(), (0,), (7,), (3, 4), (2, 3, 5)]


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def payloads():
    """tag -> payload: every dtype and shape, bytes, and a non-contiguous array."""
    out = {}
    for i, dt in enumerate(DTYPES):
        for j, shape in enumerate(SHAPES):
            out[10 * i + j] = sample(dt, shape, seed=i * 7 + j)
    out[500] = b"hello \x00 world"
    out[501] = b""
    out[502] = np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2]  # not contiguous
    out[2**64 - 1] = np.array([1.5, -2.0])                        # the largest tag
    return out


def check_same(got, want):
    if isinstance(want, bytes):
        assert isinstance(got, bytes) and got == want
        return
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.flags.c_contiguous
    assert np.array_equal(got, want)


def exchange(link, peer, seed):
    """Send every payload to peer, receive peer's in reverse tag order."""
    mine = payloads()
    for tag, value in mine.items():
        link.send(peer, tag, value)
    for tag in sorted(mine, reverse=True):
        check_same(link.recv(peer, tag, op=f"test#{tag}"), mine[tag])


def run_threads(fns, timeout=30):
    """Run callables in threads; re-raise the first exception."""
    errors, results = [], {}

    def wrap(k, fn):
        try:
            results[k] = fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(k, fn), daemon=True) for k, fn in fns.items()]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
        assert not t.is_alive(), "thread hung"
    if errors:
        raise errors[0]
    return results


def addresses(*names):
    return {n: ("127.0.0.1", p) for n, p in zip(names, free_ports(len(names)))}


def tcp_links(names, timeout=10.0, hashes=None, sessions=None, ssl_context=None):
    """Connect every party in its own thread; -> {party: link or exception}."""
    addrs = addresses(*names)
    out = {}

    def one(name):
        try:
            out[name] = TcpLink.connect(
                name, addrs, (sessions or {}).get(name, b"session-1"),
                (hashes or {}).get(name, b"\x12" * 32), timeout=timeout,
                ssl_context=ssl_context)
        except Exception as e:  # noqa: BLE001
            out[name] = e

    run_threads({n: (lambda n=n: one(n)) for n in names})
    return out


# ---------------------------------------------------------------------------
# in-process

def test_inprocess_two_parties_every_dtype():
    hub = InProcessHub(["alice", "bob"], timeout=5)
    run_threads({p: (lambda p=p, q=q: exchange(hub.link(p), q, 0))
                 for p, q in [("alice", "bob"), ("bob", "alice")]})
    st = hub.link("alice").stats()
    want = sum(v.nbytes if isinstance(v, np.ndarray) else len(v) for v in payloads().values())
    assert st["bytes_sent"] == {"bob": want} and st["bytes_received"] == {"bob": want}
    assert st["bytes_sent_total"] == want
    assert st["messages_sent"]["bob"] == len(payloads())
    hub.close()


def test_inprocess_three_parties_out_of_order():
    parties = ["p0", "p1", "p2"]
    hub = InProcessHub(parties, timeout=5)

    def party(me):
        link = hub.link(me)
        assert set(link.peers) == set(parties) - {me}
        for peer in link.peers:
            for tag in range(20):
                link.send(peer, tag, np.full(tag + 1, ord(me[1]) * 100 + tag, dtype=np.int64))
        for peer in reversed(link.peers):
            for tag in (5, 19, 0, 7, *range(8, 19), *range(1, 5), 6):
                got = link.recv(peer, tag, op="ring")
                assert np.array_equal(got, np.full(tag + 1, ord(peer[1]) * 100 + tag))
        return link.stats()

    stats = run_threads({p: (lambda p=p: party(p)) for p in parties})
    per_peer = sum(8 * (t + 1) for t in range(20))
    for p in parties:
        assert stats[p]["bytes_received_total"] == 2 * per_peer
        assert stats[p]["bytes_sent_total"] == 2 * per_peer


def test_inprocess_receiver_cannot_mutate_sender_array():
    hub = InProcessHub(["a", "b"])
    x = np.arange(1 << 20, dtype=np.uint64)  # 8 MB: passed as a view, no copy
    hub.link("a").send("b", 1, x)
    y = hub.link("b").recv("a", 1)
    assert np.shares_memory(x, y) or np.array_equal(x, y)
    with pytest.raises(ValueError):
        y[0] = 7
    with pytest.raises(ValueError):
        y.flags.writeable = True
    assert x[0] == 0 and x.flags.writeable


def test_inprocess_timeout_names_peer_and_op():
    hub = InProcessHub(["alice", "bob"], timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(PeerError) as ei:
        hub.link("alice").recv("bob", 12, op="mul#12")
    dt = time.monotonic() - t0
    assert 0.28 <= dt < 4
    msg = str(ei.value)
    assert "'bob'" in msg and "mul#12" in msg and "0.3 s" in msg and "tag 12" in msg
    assert ei.value.peer == "bob" and ei.value.op == "mul#12"


def test_inprocess_abort_wakes_waiters_promptly():
    hub = InProcessHub(["a", "b", "c"], timeout=30)
    hub.link("b").send("a", 0, b"early")
    errors = []

    def wait():
        try:
            hub.link("a").recv("b", 1, op="reveal#3")
        except PeerError as e:
            errors.append((time.monotonic(), e))

    threads = [threading.Thread(target=wait) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    hub.abort("b", "ZeroDivisionError in b's thread")
    for t in threads:
        t.join(5)
    assert len(errors) == 2 and all(t - t0 < 0.5 for t, _ in errors)
    assert "ZeroDivisionError" in str(errors[0][1]) and "reveal#3" in str(errors[0][1])
    assert hub.link("a").recv("b", 0) == b"early"      # already there: still delivered
    with pytest.raises(PeerError, match="aborted"):
        hub.link("c").recv("b", 5)                     # future recvs fail at once
    with pytest.raises(PeerError, match="aborted"):
        hub.link("c").send("b", 5, b"x")


def test_inprocess_duplicates_and_close():
    hub = InProcessHub(["a", "b"], timeout=5)
    a, b = hub.link("a"), hub.link("b")
    a.send("b", 3, b"x")
    assert b.recv("a", 3) == b"x"
    with pytest.raises(PeerError, match="already received"):
        b.recv("a", 3)
    a.send("b", 4, b"y")
    a.close()
    a.close()                                          # idempotent
    assert b.recv("a", 4) == b"y"                      # sent before close
    t0 = time.monotonic()
    with pytest.raises(PeerError, match="finished/closed"):
        b.recv("a", 5)
    assert time.monotonic() - t0 < 5          # at once, not after the 60 s timeout
    hub2 = InProcessHub(["a", "b"])
    hub2.link("a").send("b", 1, b"1")
    hub2.link("a").send("b", 1, b"2")
    with pytest.raises(PeerError, match="duplicate message tag 1"):
        hub2.link("b").recv("a", 2)


def test_bad_arguments():
    hub = InProcessHub(["a", "b"])
    with pytest.raises(PeerError, match="not a peer"):
        hub.link("a").send("zed", 1, b"")
    with pytest.raises(ValueError):
        hub.link("a").send("b", -1, b"")
    with pytest.raises(TypeError):
        hub.link("a").send("b", 1, np.array(["x"], dtype=object))
    with pytest.raises(TypeError):
        hub.link("a").send("b", 1, [1, 2])


# ---------------------------------------------------------------------------
# TCP, parties as threads

def test_tcp_two_parties_every_dtype_and_stats():
    ls = tcp_links(["alice", "bob"])
    a, b = ls["alice"], ls["bob"]
    try:
        run_threads({"a": lambda: exchange(a, "bob", 0), "b": lambda: exchange(b, "alice", 1)})
        want = sum(v.nbytes if isinstance(v, np.ndarray) else len(v) for v in payloads().values())
        for link, peer in ((a, "bob"), (b, "alice")):
            st = link.stats()
            assert st["bytes_sent"][peer] == want == st["bytes_received"][peer]
            assert st["messages_sent"][peer] == len(payloads()) == st["messages_received"][peer]
    finally:
        a.close()
        b.close()


def test_tcp_three_parties():
    names = ["carol", "alice", "bob"]   # alice dials bob and carol; bob dials carol
    ls = tcp_links(names)
    try:
        def party(me):
            link = ls[me]
            for peer in link.peers:
                for tag in (3, 1, 2):
                    link.send(peer, tag, np.array([tag, len(me)], dtype=np.uint32))
            for peer in link.peers:
                for tag in (1, 2, 3):
                    assert link.recv(peer, tag).tolist() == [tag, len(peer)]
        run_threads({n: (lambda n=n: party(n)) for n in names})
    finally:
        for link in ls.values():
            link.close()


def test_tcp_8mb_both_ways_in_threads():
    ls = tcp_links(["alice", "bob"])
    big = {n: sample(np.uint64, (1 << 20,), seed=s) for s, n in enumerate(ls)}

    def party(me, peer):
        link = ls[me]
        for tag in (2, 1, 0):
            link.send(peer, tag, big[me] + np.uint64(tag))
        for tag in (0, 2, 1):
            assert np.array_equal(link.recv(peer, tag), big[peer] + np.uint64(tag))
        link.close()

    run_threads({"a": lambda: party("alice", "bob"), "b": lambda: party("bob", "alice")})


@pytest.mark.parametrize("late", ["alice", "bob"])   # the dialer, then the acceptor
def test_tcp_peers_start_at_different_times(late):
    addrs = addresses("alice", "bob")
    out = {}

    def start(name, delay):
        time.sleep(delay)
        out[name] = TcpLink.connect(name, addrs, b"s", b"h", timeout=5)

    run_threads({n: (lambda n=n: start(n, 0.4 if n == late else 0)) for n in addrs})
    try:
        out["alice"].send("bob", 1, b"hi")
        assert out["bob"].recv("alice", 1) == b"hi"
    finally:
        for link in out.values():
            link.close()


def test_tcp_bundle_hash_mismatch_on_both_sides():
    ls = tcp_links(["alice", "bob"], timeout=5, hashes={"alice": b"\x01" * 32, "bob": b"\x02" * 32})
    for me, peer in (("alice", "bob"), ("bob", "alice")):
        err = ls[me]
        assert isinstance(err, PeerError), err
        assert err.peer == peer and "bundle hash mismatch" in str(err)
        assert "0101" in str(err) and "0202" in str(err)


def test_tcp_session_mismatch_refused():
    ls = tcp_links(["alice", "bob"], timeout=5, sessions={"alice": b"run-1", "bob": b"run-2"})
    for me in ("alice", "bob"):
        assert isinstance(ls[me], PeerError) and "session id mismatch" in str(ls[me])


def test_tcp_connect_timeout_when_peer_absent():
    addrs = addresses("alice", "bob")
    t0 = time.monotonic()
    with pytest.raises(PeerError) as ei:
        TcpLink.connect("alice", addrs, b"s", b"h", timeout=0.5)
    assert 0.45 < time.monotonic() - t0 < 5
    assert ei.value.peer == "bob" and "could not connect" in str(ei.value)
    with pytest.raises(PeerError) as ei:
        TcpLink.connect("bob", addrs, b"s", b"h", timeout=0.3)
    assert ei.value.peer == "alice" and "did not connect" in str(ei.value)


def test_tcp_stalled_peer_times_out():
    ls = tcp_links(["alice", "bob"], timeout=5)
    a, b = ls["alice"], ls["bob"]
    try:
        a.timeout = 0.5
        t0 = time.monotonic()
        with pytest.raises(PeerError) as ei:
            a.recv("bob", 9, op="less#4")
        assert 0.45 < time.monotonic() - t0 < 4
        assert ei.value.peer == "bob" and "timed out after 0.5 s" in str(ei.value)
        assert "less#4" in str(ei.value)
    finally:
        a.close()
        b.close()


def test_tcp_goodbye_is_clean_eof():
    ls = tcp_links(["alice", "bob"], timeout=5)
    a, b = ls["alice"], ls["bob"]
    big = sample(np.int64, (1 << 20,))
    a.send("bob", 1, big)
    a.send("bob", 2, b"last words")
    a.close()                                  # flushes before goodbye
    a.close()
    assert np.array_equal(b.recv("alice", 1), big)
    assert b.recv("alice", 2) == b"last words"
    t0 = time.monotonic()
    with pytest.raises(PeerError, match="peer finished/closed"):
        b.recv("alice", 3)
    with pytest.raises(PeerError, match="peer finished/closed"):
        b.recv("alice", 4)
    assert time.monotonic() - t0 < 5          # at once, not after the 10 s timeout
    b.close()


# -- raw impersonation of a peer: garbled frames, unexpected names ------------

def fake_peer(addr, name, frames, session=b"session-1", bundle=b"\x12" * 32, close=False):
    """Connect to ``addr`` as party ``name``, handshake, then write raw bytes:
    ``frames(session_tag)`` (the tag of the session the handshake made)."""
    deadline = time.monotonic() + 5
    while True:                      # the link may not be listening yet
        try:
            s = socket.create_connection(addr, timeout=5)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    mine = Ephemeral()
    s.sendall(links._hello_bytes(name, session, bundle, mine))
    peer, _, _, contribution, _ = links._read_hello(s)
    s.sendall(links._verdict_bytes())
    verdict = links._read_verdict(s)
    tag = session_id(bundle, session, {name: mine.contribution, peer: contribution})[:8]
    for f in frames(tag):
        s.sendall(f)
    if close:
        s.close()
        return verdict, None
    return verdict, s


def header(session, kind=1, code=8, ndim=1, reserved=0, tag=0, length=8, magic=b"MXFR"):
    return links._HEADER.pack(magic, kind, code, ndim, reserved, tag, length, session)


def good(session):
    return header(session, tag=1) + (1).to_bytes(8, "little") + (5).to_bytes(8, "little")


@pytest.mark.parametrize("junk, expect", [
    (lambda s: b"GARBAGE!" * 8, "malformed frame: bad magic"),
    (lambda s: header(s, code=99) + (1).to_bytes(8, "little"),
     "malformed frame: unknown dtype code 99"),
    (lambda s: header(s, ndim=2, length=8) + (3).to_bytes(8, "little") * 2,
     "malformed frame: impossible length"),
    (lambda s: header(s, kind=7), "malformed frame: unknown frame kind"),
    (lambda s: header(s, reserved=1), "malformed frame: reserved"),
    (lambda s: header(s, length=800) + (100).to_bytes(8, "little") + b"x" * 10,
     "malformed frame: truncated"),
    (lambda s: header(s)[:10], "malformed frame: truncated header"),
    (lambda s: b"", "closed by peer without goodbye"),
    (good, "duplicate message tag 1"),
    # a frame of another session (recorded in an earlier run), even one that is fine otherwise
    (lambda s: header(bytes(8), tag=2) + (1).to_bytes(8, "little") + (5).to_bytes(8, "little"),
     "frame of another session"),
], ids=["magic", "dtype", "length", "kind", "reserved", "truncated", "header", "eof",
        "duplicate", "other-session"])
def test_tcp_garbled_frame(junk, expect):
    addrs = addresses("alice", "bob")
    out = {}
    t = threading.Thread(target=lambda: out.update(
        bob=TcpLink.connect("bob", addrs, b"session-1", b"\x12" * 32, timeout=5)))
    t.start()
    verdict, _ = fake_peer(addrs["bob"], "alice", lambda s: [good(s), junk(s)], close=True)
    t.join(5)
    bob = out["bob"]
    assert verdict is None
    try:
        assert bob.recv("alice", 1).tolist() == [5]      # the good frame before the junk
        t0 = time.monotonic()
        with pytest.raises(PeerError) as ei:
            bob.recv("alice", 2, op="mul#7")
        assert time.monotonic() - t0 < 5
        assert ei.value.peer == "alice" and expect in str(ei.value) and "mul#7" in str(ei.value)
        with pytest.raises(PeerError, match=expect.split(":")[0]):
            bob.recv("alice", 3)                          # sticky
    finally:
        bob.close()


def test_tcp_unexpected_party_refused_then_real_peer_accepted():
    addrs = addresses("alice", "bob")
    out = {}
    t = threading.Thread(target=lambda: out.update(
        bob=TcpLink.connect("bob", addrs, b"session-1", b"\x12" * 32, timeout=5)))
    t.start()
    time.sleep(0.05)
    verdict, s = fake_peer(addrs["bob"], "mallory", lambda s: [])
    assert verdict is not None and "unexpected party 'mallory'" in verdict
    s.close()
    junk = socket.create_connection(addrs["bob"])       # not even a handshake
    junk.sendall(b"GET / HTTP/1.0\r\n\r\n")
    alice = TcpLink.connect("alice", addrs, b"session-1", b"\x12" * 32, timeout=5)
    t.join(5)
    bob = out["bob"]
    try:
        alice.send("bob", 1, np.arange(3))
        assert bob.recv("alice", 1).tolist() == [0, 1, 2]
    finally:
        junk.close()
        alice.close()
        bob.close()


# ---------------------------------------------------------------------------
# TCP, parties as processes

def _child_party(name, addrs, mode, q):
    peer = next(p for p in addrs if p != name)
    try:
        link = TcpLink.connect(name, addrs, b"session-1", b"\x12" * 32, timeout=20)
        if mode == "kill-me":
            link.send(peer, 0, b"ready")
            time.sleep(60)
            return
        big = sample(np.uint64, (1 << 20,), seed=1)
        t0 = time.perf_counter()
        for tag in (3, 2, 1, 0):
            link.send(peer, tag, big + np.uint64(tag))
        for tag in (1, 3, 0, 2):
            got = link.recv(peer, tag)
            assert np.array_equal(got, sample(np.uint64, (1 << 20,), seed=0) + np.uint64(tag))
        dt = time.perf_counter() - t0
        link.close()
        q.put(("ok", dt))
    except BaseException as e:  # noqa: BLE001
        q.put(("error", repr(e)))


def test_tcp_two_processes_8mb_both_ways():
    ctx = multiprocessing.get_context("spawn")
    addrs = addresses("alice", "bob")
    q = ctx.Queue()
    child = ctx.Process(target=_child_party, args=("bob", addrs, "exchange", q), daemon=True)
    child.start()
    try:
        link = TcpLink.connect("alice", addrs, b"session-1", b"\x12" * 32, timeout=20)
        big = sample(np.uint64, (1 << 20,), seed=0)
        for tag in (0, 1, 2, 3):
            link.send("bob", tag, big + np.uint64(tag))
        for tag in (2, 0, 3, 1):
            assert np.array_equal(link.recv("bob", tag), sample(np.uint64, (1 << 20,), seed=1)
                                  + np.uint64(tag))
        link.close()
        status, info = q.get(timeout=20)
        assert status == "ok", info
        child.join(10)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()


def test_tcp_killed_peer_detected_before_timeout():
    ctx = multiprocessing.get_context("spawn")
    addrs = addresses("alice", "bob")
    q = ctx.Queue()
    child = ctx.Process(target=_child_party, args=("bob", addrs, "kill-me", q), daemon=True)
    child.start()
    try:
        link = TcpLink.connect("alice", addrs, b"session-1", b"\x12" * 32, timeout=20)
        assert link.recv("bob", 0) == b"ready"
        threading.Timer(0.2, os.kill, args=(child.pid, signal.SIGKILL)).start()
        t0 = time.monotonic()
        with pytest.raises(PeerError) as ei:
            link.recv("bob", 1, op="matmul#2")        # timeout is 20 s
        dt = time.monotonic() - t0
        assert dt < 8, dt
        assert ei.value.peer == "bob" and "matmul#2" in str(ei.value)
        assert "closed by peer" in str(ei.value) or "reset" in str(ei.value)
        with pytest.raises(PeerError):
            link.send("bob", 2, b"x")
        link.close()
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()


# ---------------------------------------------------------------------------
# TLS hook

@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls_exchange(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=mixc-test"],
                   check=True, capture_output=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    client.check_hostname = False
    ls = tcp_links(["alice", "bob"], ssl_context=(server, client))
    a, b = ls["alice"], ls["bob"]
    assert isinstance(a._conns["bob"].sock, ssl.SSLSocket)
    big = {n: sample(np.uint64, (1 << 20,), seed=s) for s, n in enumerate(ls)}

    def party(me, peer):
        link = ls[me]
        exchange(link, peer, 0)
        for tag in (1001, 1000):
            link.send(peer, tag, big[me] + np.uint64(tag))
        for tag in (1000, 1001):
            assert np.array_equal(link.recv(peer, tag), big[peer] + np.uint64(tag))

    try:
        run_threads({"a": lambda: party("alice", "bob"), "b": lambda: party("bob", "alice")})
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------
# session and pairwise keys (runtime/session_keys.py): agreed, never sent

def test_tcp_pair_keys_agree_and_session_is_fresh():
    runs = []
    for _ in range(2):
        ls = tcp_links(["alice", "bob", "carol"])
        try:
            assert len({ls[p].session for p in ls}) == 1 and len(ls["alice"].session) == 64
            keys = {}
            for me in ls:
                for peer in ls[me].peers:
                    pair = "~".join(sorted([me, peer]))
                    for name in (pair, pair + "/other"):
                        keys.setdefault(name, set()).add(ls[me].pair_key(peer, name))
            assert all(len(v) == 1 for v in keys.values()), keys   # both ends derive the same
            flat = [next(iter(v)) for v in keys.values()]
            assert len(set(flat)) == len(flat) == 6 and all(len(k) == 32 for k in flat)
            runs.append((ls["alice"].session, set(flat)))
        finally:
            for link in ls.values():
                link.close()
    # the same label and bundle, a new run: a new session and new keys
    assert runs[0][0] != runs[1][0] and not runs[0][1] & runs[1][1]


def test_inprocess_pair_keys_agree():
    hub = InProcessHub(["a", "b", "c"])
    a, b, c = (hub.link(p) for p in "abc")
    assert a.session == b.session == c.session != InProcessHub(["a", "b", "c"]).link("a").session
    assert a.pair_key("b", "a~b") == b.pair_key("a", "a~b") != c.pair_key("a", "a~c")
    assert a.pair_key("b", "a~b") != a.pair_key("b", "a~b#2")
    with pytest.raises(PeerError, match="not a peer"):
        a.pair_key("mallory", "a~mallory")
    hub.close()


def test_session_keys_bind_every_input():
    """Changing any one input of the derivation changes the key."""
    from mixc.runtime.session_keys import SessionKeys
    ea, eb = Ephemeral(), Ephemeral()

    def key(bundle=b"h", label=b"l", contribution=None, name="a~b"):
        peers = {"b": (contribution or eb.contribution, eb.public, ea.shared(eb.public))}
        return SessionKeys("a", ea, bundle, label, peers).pair_key("b", name)

    base = key()
    mirror = SessionKeys("b", eb, b"h", b"l", {"a": (ea.contribution, ea.public,
                                                     eb.shared(ea.public))})
    assert mirror.pair_key("a", "a~b") == base
    assert len({base, key(bundle=b"H"), key(label=b"L"), key(contribution=bytes(32)),
                key(name="a~b/2")}) == 5


def test_small_order_public_key_refused():
    addrs = addresses("alice", "bob")
    out = {}
    t = threading.Thread(target=lambda: out.update(bob=_connect_catching("bob", addrs)))
    t.start()

    class Weak:                      # the all-zero point: its shared secret is known to anyone
        contribution, public = bytes(32), bytes(32)
    deadline = time.monotonic() + 5
    while True:
        try:
            s = socket.create_connection(addrs["bob"], timeout=5)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    s.sendall(links._hello_bytes("alice", b"session-1", b"\x12" * 32, Weak))
    links._read_hello(s)
    assert "small order" in links._read_verdict(s)
    s.close()
    t.join(10)
    assert isinstance(out["bob"], PeerError) and "small order" in str(out["bob"])


def _connect_catching(name, addrs):
    try:
        return TcpLink.connect(name, addrs, b"session-1", b"\x12" * 32, timeout=5)
    except PeerError as e:
        return e


def test_on_this_host():
    assert links.on_this_host("127.0.0.1") and links.on_this_host("127.0.0.2")
    assert links.on_this_host("localhost")
    if socket.has_ipv6:
        assert links.on_this_host("::1")
    # TEST-NET addresses (RFC 5737) are on no host; nothing is sent to find out
    assert not links.on_this_host("192.0.2.1") and not links.on_this_host("203.0.113.7")
    assert not links.on_this_host("no-such-host.invalid")


def test_plain_tcp_to_another_host_refused_before_connecting():
    from mixc.errors import MixcError
    addrs = {"alice": ("127.0.0.1", 1), "bob": ("192.0.2.1", 7002)}
    t0 = time.monotonic()
    with pytest.raises(MixcError, match=r"plain TCP to peer 'bob' at 192.0.2.1:7002, not on "
                                        r"this host.*--tls KEYDIR.*--insecure"):
        TcpLink.connect("alice", addrs, b"s", b"h", timeout=30)
    assert time.monotonic() - t0 < 1
