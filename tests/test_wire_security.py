"""What the network sees of a run, and what it can replay.

- A run of three ``mixc run --party`` processes whose every connection goes
  through a recording proxy (``faultproxy.py --capture``): no 8-byte window of
  any key the parties use (logged through the executor's debug hook
  ``MIXC_DEBUG_KEY_LOG``, off by default) appears in either direction of any
  connection, while the bundle hash each hello carries does (the search works).
- Alice's recorded bytes replayed to bob in a new run under the *same*
  ``--session`` label: the hello is accepted, but the old frames carry the old
  session and are refused.
- In a private network namespace (no network at all): plain TCP to a peer
  address not on this host is refused in one line before any connection,
  unless ``--insecure``; a non-loopback address of this host is fine.
- Two namespaces joined by a veth pair (two "hosts"): a listener hangs up on a
  plain connection from the other host unless it runs with ``--insecure``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from faultproxy import free_ports, mixc_party, start_proxy, start_replay
from test_faults import PROGRAMS, build, check_dealer, check_failed, cleanup

LABEL = "5e55a0"        # the --session label of both runs below


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("wire")
    (d / "progs.py").write_text(PROGRAMS)
    b = build(d, "medium")
    rng = np.random.default_rng(5)
    np.save(d / "a.npy", rng.uniform(-0.5, 0.5, (64, 64)).astype(np.float32))
    np.save(d / "b.npy", (0.5 * np.eye(64) + rng.uniform(-0.01, 0.01, (64, 64)))
            .astype(np.float32))
    _, err = b.communicate(timeout=120)
    assert b.returncode == 0, err
    return d


def _inputs(d):
    return {"alice": [f"a={d / 'a.npy'}"], "bob": [f"b={d / 'b.npy'}"], "dealer": []}


@pytest.fixture(scope="module")
def eavesdropped(work):
    """A clean run with every connection through a capturing proxy: -> (captures, keys)."""
    d = work
    peers = {n: ("127.0.0.1", p) for n, p in zip(["alice", "bob", "dealer"], free_ports(3))}
    keylog = d / "keys.txt"
    env = dict(os.environ, MIXC_DEBUG_KEY_LOG=str(keylog))
    proxies, seen = [], {}
    # the party whose name sorts first dials: give it the proxy's port as the other's address
    for dialer, acceptor in [("alice", "bob"), ("alice", "dealer"), ("bob", "dealer")]:
        capture = d / f"capture-{dialer}-{acceptor}"
        capture.mkdir()
        proxy, port = start_proxy(peers[acceptor], "none", capture=capture, max_seconds=60)
        proxies.append(proxy)
        seen.setdefault(dialer, dict(peers))[acceptor] = ("127.0.0.1", port)
    procs = {p: mixc_party(d / "medium", p, seen.get(p, peers), inputs=_inputs(d)[p],
                           output=d / "out" / p, timeout=20, session=LABEL, env=env)
             for p in ("dealer", "bob", "alice")}
    try:
        for p in procs.values():
            assert p.wait(60) == 0, (p.name, p.text())
    finally:
        cleanup(procs, proxies)
    a, b = np.load(d / "a.npy"), np.load(d / "b.npy")
    want = a * b
    for _ in range(3):
        want = want @ b
    np.testing.assert_allclose(np.load(d / "out" / "alice" / "r1.npy"), want, atol=2e-3)
    keys = {}
    for line in keylog.read_text().splitlines():
        party, seed, hexkey = line.split()
        keys.setdefault(seed, {})[party] = bytes.fromhex(hexkey)
    captures = {f.parent.name + "/" + f.name: f.read_bytes()
                for f in sorted(d.glob("capture-*/*.bin"))}
    return captures, keys


def test_no_key_byte_sequence_on_the_wire(work, eavesdropped):
    captures, keys = eavesdropped
    manifest = json.loads((work / "medium" / "manifest.json").read_text())
    # every connection was captured both ways, and the search finds what is sent
    for pair in ("alice-bob", "alice-dealer", "bob-dealer"):
        for way in ("c2s", "s2c"):
            data = captures[f"capture-{pair}/1-{way}.bin"]
            assert manifest["hash"].encode() in data, (pair, way)
    assert sum(map(len, captures.values())) > 64 * 64 * 8
    pairs = {seed: by for seed, by in keys.items() if "~" in seed}
    assert {frozenset(seed.split("~")) for seed in pairs} >= {
        frozenset(("alice", "bob")), frozenset(("alice", "dealer")),
        frozenset(("bob", "dealer"))}, sorted(keys)
    for seed, by in pairs.items():
        assert set(by) == set(seed.split("~")) and len(set(by.values())) == 1, seed
    for seed, by in keys.items():
        key = next(iter(by.values()))
        assert len(key) == 32
        for i in range(len(key) - 7):
            window = key[i:i + 8]
            for name, data in captures.items():
                assert window not in data, (seed, i, name)


def test_old_session_frames_refused_under_the_same_label(work, eavesdropped):
    """The recorded alice->bob bytes replayed into a new run with the same --session label:
    the hello passes (it could be a new one), the frames carry the old session: refused."""
    d = work
    recording = d / "capture-alice-bob" / "1-c2s.bin"
    peers = {n: ("127.0.0.1", p) for n, p in zip(["alice", "bob", "dealer"], free_ports(3))}
    procs = {p: mixc_party(d / "medium", p, peers, inputs=_inputs(d)[p],
                           output=d / "replayed" / p, timeout=5, session=LABEL)
             for p in ("dealer", "bob")}
    replay = start_replay(peers["bob"], recording)
    try:
        t, verdict = replay.wait_line("verdict", 20)
        assert verdict == "verdict ok ", verdict
        check_failed(procs["bob"], t, "alice", "frame of another session",
                     "a replay of another run's traffic?")
        check_dealer(procs["dealer"], t)
        assert not (d / "replayed" / "bob" / "r2.npy").exists()
    finally:
        cleanup(procs, [replay])


# ---------------------------------------------------------------------------
# "a peer on another host", in a network namespace of our own (nothing leaves it)

NETNS = shutil.which("unshare") and shutil.which("ip") and os.geteuid() == 0


def _in_netns(script, timeout=60):
    """Run shell ``script`` in a new network namespace with only lo (up) and 10.9.9.1/32 on it."""
    setup = "ip link set lo up && ip addr add 10.9.9.1/32 dev lo && "
    return subprocess.run(["unshare", "--net", "sh", "-c", setup + script], capture_output=True,
                          text=True, timeout=timeout)


def _party_cmd(d, party, peers, *extra):
    args = [sys.executable, "-m", "mixc", "run", str(d / "medium"), "--party", party, "--peers",
            peers, "--timeout", "3", *extra]
    for item in _inputs(d)[party]:
        args += ["--input", item]
    return " ".join(f"'{a}'" for a in args)


@pytest.mark.skipif(not NETNS, reason="needs root, unshare and ip (a private network namespace)")
def test_plain_tcp_to_another_host_refused(work):
    d = work
    peers = "alice=127.0.0.1:7001,bob=10.9.9.9:7002,dealer=127.0.0.1:7003"
    t0 = time.monotonic()
    res = _in_netns(_party_cmd(d, "alice", peers))
    assert res.returncode == 1, res
    assert res.stderr.strip().splitlines() == [
        "mixc: error: plain TCP to peer 'bob' at 10.9.9.9:7002, not on this host, would let the "
        "network read every message: use --tls KEYDIR (made by mixc keygen), or --insecure to "
        "run over plain TCP anyway"], res.stderr
    assert time.monotonic() - t0 < 20
    # --insecure says so explicitly: it tries (the namespace has no route: it cannot reach bob)
    res = _in_netns(_party_cmd(d, "alice", peers, "--insecure"))
    assert res.returncode == 1 and "plain TCP" not in res.stderr, res
    assert "peer 'bob' during connect: could not connect to 10.9.9.9:7002" in res.stderr, res
    res = _in_netns(_party_cmd(d, "alice", peers, "--insecure", "--tls", str(d)))
    assert res.returncode == 2 and "cannot go with --tls" in res.stderr, res


@pytest.mark.skipif(not NETNS, reason="needs root, unshare and ip (a private network namespace)")
def test_plain_tcp_to_an_address_of_this_host_runs(work):
    """10.9.9.1 is not loopback but is this host's (in the namespace): plain TCP is fine."""
    d = work
    out = d / "netns_out"
    peers = "alice=10.9.9.1:7001,bob=10.9.9.1:7002,dealer=10.9.9.1:7003"
    script = " & ".join(_party_cmd(d, p, peers, "--output", str(out / p))
                        for p in ("dealer", "bob", "alice"))
    res = _in_netns(f"{script} & wait %1 && wait %2 && wait %3")
    assert res.returncode == 0, res
    assert (out / "alice" / "r1.npy").exists() and (out / "bob" / "r2.npy").exists(), res


def _two_hosts(d, host_extra, tag):
    """Bob and the dealer on "host A" (10.9.0.1), alice on "host B" (10.9.0.2, a second namespace
    joined by a veth pair), alice with --insecure: -> {party: (returncode, stderr)}."""
    here = "alice=10.9.0.1:7001,bob=10.9.0.1:7002,dealer=10.9.0.1:7003"   # all on A, as A sees it
    there = "alice=10.9.0.2:7001,bob=10.9.0.1:7002,dealer=10.9.0.1:7003"
    out = d / f"two_hosts_{tag}"
    out.mkdir()
    cmds = {p: _party_cmd(d, p, here, *host_extra, "--output", str(out / p)) for p in ("bob", "dealer")}
    cmds["alice"] = _party_cmd(d, "alice", there, "--insecure", "--output", str(out / "alice"))
    script = (
        "unshare --net sleep 60 & B=$!; sleep 0.3; "
        "ip link add va type veth peer name vb && ip link set vb netns $B && "
        "ip addr add 10.9.0.1/24 dev va && ip link set va up && "
        "nsenter --net=/proc/$B/ns/net sh -c 'ip link set lo up; ip addr add 10.9.0.2/24 dev vb; "
        "ip link set vb up' && "
        + " ".join(f"({cmd} 2>{out}/{p}.err; echo $? >{out}/{p}.rc) &" for p, cmd in cmds.items()
                   if p != "alice")
        + f" (nsenter --net=/proc/$B/ns/net {cmds['alice']} 2>{out}/alice.err; "
          f"echo $? >{out}/alice.rc); wait %2 %3; kill $B")
    res = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up && " + script],
                         capture_output=True, text=True, timeout=90)
    assert all((out / f"{p}.rc").exists() for p in cmds), res
    return {p: (int((out / f"{p}.rc").read_text()), (out / f"{p}.err").read_text()) for p in cmds}, out


@pytest.mark.skipif(not (NETNS and shutil.which("nsenter")),
                    reason="needs root, unshare, nsenter and ip (network namespaces)")
def test_listener_refuses_plain_tcp_from_another_host(work):
    """Two namespaces joined by a veth pair: alice dials from another host over plain TCP
    (--insecure on her side only). Bob and the dealer, whose peer lists are all on their own
    host, hang up on her: each fails within its timeout naming alice and the refusal; alice
    fails naming bob. With --insecure on their side too, the same topology runs."""
    t0 = time.monotonic()
    seen, _ = _two_hosts(work, (), "refused")
    assert time.monotonic() - t0 < 30
    for p in ("bob", "dealer"):
        rc, err = seen[p]
        assert rc == 1 and err.startswith(f"mixc: error: peer 'alice' during connect: did not "
                                          "connect to this party"), (p, err)
        assert "10.9.0.2:" in err and "plain TCP from another host refused (no --tls)" in err, err
    rc, err = seen["alice"]
    assert rc == 1 and err.startswith("mixc: error: peer 'bob' during connect: could not connect "
                                      "to 10.9.0.1:7002"), err
    seen, out = _two_hosts(work, ("--insecure",), "insecure")
    assert all(rc == 0 for rc, _ in seen.values()), seen
    a, b = np.load(work / "a.npy"), np.load(work / "b.npy")
    want = a * b
    for _ in range(3):
        want = want @ b
    np.testing.assert_allclose(np.load(out / "alice" / "r1.npy"), want, atol=2e-3)
