"""``mixc keygen`` and ``mixc run --tls``: mutual TLS between party processes.

- keygen writes a CA and per-party certificates (keys mode 0600), reuses the CA;
- two parties started by hand on two loopback addresses (127.0.0.1 and
  127.0.0.2) plus the dealer, all with TLS, give the result of ``simulate``;
- strangers (no TLS, another CA, a certificate of a party not in the bundle,
  a certificate that does not match the hello) are turned away while the
  listener keeps waiting for the real peer;
- parties whose bundles differ refuse to start; TLS on one side only fails
  on both within the timeout;
- bad ``--tls`` directories fail before connecting, in one line.
"""
from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from faultproxy import free_ports, mixc_party
from test_cli import PROGRAM, assert_one_line_error, expected

pytest.importorskip("cryptography")

TIMEOUT = 5.0


def run_main(capsys, *args):
    from mixc.cli import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    (d / "small.py").write_text(PROGRAM)
    # a second, different program with the same parties and inputs
    (d / "other.py").write_text(PROGRAM.replace("(a @ b.T)[:3, :3].sum(axis=1)",
                                                "(a @ b.T)[:3, :3].sum(axis=0)"))
    builds = [subprocess.Popen([sys.executable, "-m", "mixc", "build", str(d / f"{n}.py"), "-o",
                                str(d / n)], cwd=d, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for n in ("small", "other")]
    rng = np.random.default_rng(11)
    a = rng.uniform(-2, 2, (4, 3)).astype(np.float32)
    b = rng.uniform(-2, 2, (4, 3)).astype(np.float32)
    np.save(d / "a.npy", a)
    np.save(d / "b.npy", b)
    from mixc.tls import keygen
    keygen(d / "keys", ["alice", "bob", "dealer", "carol"])
    keygen(d / "otherca", ["alice"])
    for p in builds:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    return d, a, b


def test_keygen(tmp_path, capsys, work):
    d = work[0]
    res = run_main(capsys, "keygen", tmp_path / "k", "--bundle", d / "small")
    assert res.returncode == 0, res.stderr
    k = tmp_path / "k"
    assert sorted(p.name for p in k.iterdir()) == sorted(
        ["ca.crt", "ca.key", "alice.crt", "alice.key", "bob.crt", "bob.key", "dealer.crt",
         "dealer.key"])
    for f in k.glob("*.key"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    ca = x509.load_pem_x509_certificate((k / "ca.crt").read_bytes())
    alice = x509.load_pem_x509_certificate((k / "alice.crt").read_bytes())
    assert alice.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    alice.verify_directly_issued_by(ca)
    # adding a party later reuses the CA
    res = run_main(capsys, "keygen", k, "--parties", "carol")
    assert res.returncode == 0, res.stderr
    assert (k / "ca.crt").read_bytes() == ca.public_bytes(
        __import__("cryptography.hazmat.primitives.serialization",
                   fromlist=["Encoding"]).Encoding.PEM)
    x509.load_pem_x509_certificate((k / "carol.crt").read_bytes()).verify_directly_issued_by(ca)
    # errors: one line
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "ca.crt").write_text("x")
    res = run_main(capsys, "keygen", d / "small")      # a bundle is no place for keys
    assert res.returncode == 2 and "keep keys out of it" in res.stderr, res.stderr
    assert not (d / "small" / "ca.key").exists()
    for args, needle in [
        (["keygen", tmp_path / "lonely", "--parties", "a"], "ca.key"),
        (["keygen", tmp_path / "k2", "--parties", "a,a"], "twice"),
        (["keygen", tmp_path / "k2", "--parties", "a,,b"], "party names"),
        (["keygen", tmp_path / "k2", "--bundle", tmp_path / "nowhere"], "nowhere"),
    ]:
        assert_one_line_error(run_main(capsys, *args), needle)


def test_tls_two_addresses_matches_simulate(work):
    """alice on 127.0.0.1, bob on 127.0.0.2, dealer on 127.0.0.1, by hand, over TLS."""
    d, a, b = work
    from mixc.bundle import Bundle, simulate
    (ap, dp), (bp,) = free_ports(2, "127.0.0.1"), free_ports(1, "127.0.0.2")
    peers = {"alice": ("127.0.0.1", ap), "bob": ("127.0.0.2", bp), "dealer": ("127.0.0.1", dp)}
    out = d / "tls_out"
    procs = [
        mixc_party(d / "small", "dealer", peers, timeout=30, tls=d / "keys"),
        mixc_party(d / "small", "bob", peers, inputs=[f"b={d / 'b.npy'}"], output=out / "bob",
                   timeout=30, tls=d / "keys"),
        mixc_party(d / "small", "alice", peers, inputs=[f"a={d / 'a.npy'}"],
                   output=out / "alice", timeout=30, tls=d / "keys"),
    ]
    try:
        for p in procs:
            assert p.wait(60) == 0, (p.name, p.text())
    finally:
        for p in procs:
            p.kill()
    got = {"r1": np.load(out / "alice" / "r1.npy"), "r2": np.load(out / "bob" / "r2.npy")}
    sim = simulate(Bundle.load(d / "small"), {"a": a, "b": b})
    for k in ("r1", "r2"):
        assert got[k].dtype == sim[k].dtype and got[k].shape == sim[k].shape
        # fresh random shares each run: equal up to the fixed-point truncation error
        np.testing.assert_allclose(got[k], sim[k], rtol=0, atol=1e-4)
        np.testing.assert_allclose(got[k], expected(a, b), atol=1e-3)


def _hello(name, session, bundle_hash):
    from mixc.runtime.links import _hello_bytes
    from mixc.runtime.session_keys import Ephemeral
    return _hello_bytes(name, session.encode(), bundle_hash.encode(), Ephemeral())


def _stranger(addr, ctx=None, hello=None):
    """Connect to a party's listener; -> what came back (b"" if it hung up)."""
    sock = socket.create_connection(addr, timeout=5)
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=addr[0])
        if hello:
            sock.sendall(hello)
        got = b""
        while len(got) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return got
    except (OSError, ssl.SSLError):
        return b""
    finally:
        sock.close()


def _client_ctx(keys, party):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(keys / "ca.crt"))
    ctx.load_cert_chain(str(keys / f"{party}.crt"), str(keys / f"{party}.key"))
    return ctx


def _wait_listening(addr, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(addr, timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {addr}")


def test_tls_strangers_refused_then_real_run(work):
    d, a, b = work
    import json
    manifest = json.loads((d / "small" / "manifest.json").read_text())
    session = "c0ffee"
    peers = {n: ("127.0.0.1", p) for n, p in zip(["alice", "bob", "dealer"], free_ports(3))}
    keys = d / "keys"
    out = d / "strangers_out"
    bob = mixc_party(d / "small", "bob", peers, inputs=[f"b={d / 'b.npy'}"],
                     output=out / "bob", timeout=20, tls=keys, session=session)
    dealer = mixc_party(d / "small", "dealer", peers, timeout=20, tls=keys, session=session)
    procs = [bob, dealer]
    try:
        _wait_listening(peers["bob"])
        _wait_listening(peers["dealer"])
        hello = _hello("alice", session, manifest["hash"])
        # 1. plain TCP, a perfect hello: no TLS, no answer
        assert b"MXHS" not in _stranger(peers["bob"], None, hello)
        # 2. TLS with a certificate from another CA
        foreign = _client_ctx(d / "otherca", "alice")
        foreign.load_verify_locations(str(keys / "ca.crt"))   # it trusts bob; bob does not trust it
        assert b"MXHS" not in _stranger(peers["bob"], foreign, hello)
        # 3. a good certificate of a party that is not in the bundle
        assert b"MXHS" not in _stranger(peers["bob"], _client_ctx(keys, "carol"),
                                        _hello("carol", session, manifest["hash"]))
        # 4. dealer's certificate at bob's door (bob accepts only alice)
        assert b"MXHS" not in _stranger(peers["bob"], _client_ctx(keys, "dealer"), hello)
        # 5. alice's certificate, but a hello claiming to be bob (at the dealer's door)
        got = _stranger(peers["dealer"], _client_ctx(keys, "alice"),
                        _hello("bob", session, manifest["hash"]))
        assert b"hello claims party 'bob' but its TLS certificate names ['alice']" in got, got
        assert bob.proc.poll() is None and dealer.proc.poll() is None
        # the real alice: the run goes through
        alice = mixc_party(d / "small", "alice", peers, inputs=[f"a={d / 'a.npy'}"],
                           output=out / "alice", timeout=20, tls=keys, session=session)
        procs.append(alice)
        for p in procs:
            assert p.wait(60) == 0, (p.name, p.text())
        np.testing.assert_allclose(np.load(out / "alice" / "r1.npy"), expected(a, b), atol=1e-3)
    finally:
        for p in procs:
            p.kill()


def _fails_fast(procs, since, limit, *needles_by_party):
    lines = {}
    for p in procs:
        rc = p.wait(max(0.0, since + limit - time.monotonic()))
        assert rc == 1, (p.name, rc, p.text())
        errors = p.errors()
        assert len(errors) == 1 and "Traceback" not in p.text(), p.text()
        lines[p.name] = errors[0]
    for party, needles in needles_by_party:
        for n in needles:
            assert n in lines[party], lines[party]
    return lines


def test_different_bundles_refused(work):
    """alice runs one bundle, bob and the dealer another: nobody starts."""
    d, _, _ = work
    peers = {n: ("127.0.0.1", p) for n, p in zip(["alice", "bob", "dealer"], free_ports(3))}
    start = time.monotonic()
    procs = [
        mixc_party(d / "small", "alice", peers, inputs=[f"a={d / 'a.npy'}"], timeout=TIMEOUT,
                   output=d / "mismatch" / "alice"),
        mixc_party(d / "other", "bob", peers, inputs=[f"b={d / 'b.npy'}"], timeout=TIMEOUT),
        mixc_party(d / "other", "dealer", peers, timeout=2),
    ]
    try:
        # alice's bundle differs from both of her peers': whichever she meets first;
        # bob meets alice's hello (or, had she given up first, her absence)
        lines = _fails_fast(procs[:2], start, TIMEOUT + 8,
                            ("alice", ["during connect: bundle hash mismatch"]),
                            ("bob", ["peer 'alice' during connect"]))
        assert "peer 'bob'" in lines["alice"] or "peer 'dealer'" in lines["alice"]
        # the dealer never hears from alice (she stopped at bob's refusal): its timeout
        assert procs[2].wait(2 + 8) == 1, procs[2].text()
        assert not (d / "mismatch" / "alice" / "r1.npy").exists()
    finally:
        for p in procs:
            p.kill()


def test_tls_on_one_side_only(work):
    d, _, _ = work
    peers = {n: ("127.0.0.1", p) for n, p in zip(["alice", "bob", "dealer"], free_ports(3))}
    start = time.monotonic()
    procs = [
        mixc_party(d / "small", "alice", peers, inputs=[f"a={d / 'a.npy'}"], timeout=2,
                   tls=d / "keys"),
        mixc_party(d / "small", "bob", peers, inputs=[f"b={d / 'b.npy'}"], timeout=2),
        mixc_party(d / "small", "dealer", peers, timeout=2, tls=d / "keys"),
    ]
    try:
        _fails_fast(procs[:2], start, 2 + 8,
                    ("alice", ["peer 'bob' during connect"]),
                    ("bob", ["peer 'alice' during connect"]))
    finally:
        for p in procs:
            p.kill()


def test_bad_tls_dir(work, tmp_path, capsys):
    d, _, _ = work
    keys = d / "keys"
    peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in zip(["alice", "bob", "dealer"],
                                                           free_ports(3)))
    common = ["run", d / "small", "--party", "alice", "--peers", peers, "--input",
              f"a={d / 'a.npy'}", "--timeout", "20"]
    only_bob = tmp_path / "only_bob"
    only_bob.mkdir()
    for f in ("ca.crt", "bob.crt", "bob.key"):
        (only_bob / f).write_bytes((keys / f).read_bytes())
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "ca.crt").write_bytes((keys / "ca.crt").read_bytes())
    (swapped / "alice.crt").write_bytes((keys / "bob.crt").read_bytes())
    (swapped / "alice.key").write_bytes((keys / "bob.key").read_bytes())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "ca.crt").write_bytes((d / "otherca" / "ca.crt").read_bytes())
    (foreign / "alice.crt").write_bytes((keys / "alice.crt").read_bytes())
    (foreign / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    wrongkey = tmp_path / "wrongkey"
    wrongkey.mkdir()
    (wrongkey / "ca.crt").write_bytes((keys / "ca.crt").read_bytes())
    (wrongkey / "alice.crt").write_bytes((keys / "alice.crt").read_bytes())
    (wrongkey / "alice.key").write_bytes((keys / "bob.key").read_bytes())
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "ca.crt").write_text("not a certificate\n")
    (garbage / "alice.crt").write_bytes((keys / "alice.crt").read_bytes())
    (garbage / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    for tls, needles in [
        (tmp_path / "nowhere", ["nowhere", "mixc keygen"]),
        (only_bob, ["alice.crt", "missing"]),
        (swapped, ["alice.crt", "'bob'", "not party 'alice'"]),
        (foreign, ["not issued by"]),
        (wrongkey, ["alice.key"]),
        (garbage, ["ca.crt", "not a PEM certificate"]),
    ]:
        start = time.monotonic()
        assert_one_line_error(run_main(capsys, *common, "--tls", tls), *needles)
        assert time.monotonic() - start < 10       # before connecting (that waits 20 s)


def test_tls_1_3_only(work):
    """The contexts of mixc.tls speak TLS 1.3 and nothing older, in both roles."""
    import threading
    from mixc.tls import contexts
    keys = work[0] / "keys"
    server, client = contexts(keys, "bob")
    _, alice_client = contexts(keys, "alice")
    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_3

    def handshake(client_ctx):
        a, b = socket.socketpair()
        result = {}

        def serve():
            try:
                with server.wrap_socket(b, server_side=True) as s:
                    result["version"] = s.version()
            except (ssl.SSLError, OSError) as e:
                result["error"] = e
        t = threading.Thread(target=serve)
        t.start()
        try:
            with client_ctx.wrap_socket(a, server_hostname="bob") as c:
                c.version()
        except (ssl.SSLError, OSError):
            pass
        t.join(10)
        return result

    assert handshake(alice_client) == {"version": "TLSv1.3"}
    old = _client_ctx(keys, "alice")
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    got = handshake(old)
    assert "version" not in got and "UNSUPPORTED_PROTOCOL" in str(got["error"]), got
