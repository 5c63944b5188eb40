"""Reliability figures: inject each fault N times between real party processes.

    python benchmarks/reliability.py [--n 5] [--timeout 5] [--fuzz 500] [FAULT ...]

Builds two programs of ``tests/test_faults.py`` (``medium``: 64x64, a few
multiplications; ``long``: 16 chained 256x256 matmuls) into a temporary
directory and runs alice, bob and the dealer as ``mixc run --party``
processes on loopback, with ``benchmarks/faultproxy.py`` between alice and bob
where the fault is on the network. Faults:

- ``sigkill``: bob is killed (SIGKILL) mid-run (``long``);
- ``sigstop``: bob is frozen (SIGSTOP) mid-run (``long``) -- detected at
  ``--timeout``, by design;
- ``reset``, ``garble``, ``truncate``, ``duplicate``: the proxy resets the
  connection / corrupts a frame header / cuts a frame short / replays a
  frame, at the 3rd frame from alice to bob (``medium``);
- ``tls_garble``: with ``--tls``, one byte of an encrypted record flipped;
- ``proxy_kill``: the path between alice and bob dies (the proxy, stalled
  mid-run, is SIGKILLed);
- ``old_session``: a recorded handshake from an earlier session is replayed
  at bob's listener before the real alice arrives.

A trial *survives* the fault when every party that was still running exits
non-zero within ``--timeout`` + 3 s of the fault, each with exactly one
``mixc: error:`` line naming a peer (``peer 'x' during <op>``), no
traceback, and no output file exists afterwards (the dealer may exit 0 if
it had delivered everything before the fault). For each fault it prints one
JSON line: ``fault``, ``trials``, ``survived``, ``detect_s`` (min / median /
max seconds from the fault to the last failing party's exit) and an example
error line. ``--fuzz M`` then mutates alice's program file M times (random
byte/line edits) and runs ``mixc run`` on it in-process: one JSON line with
how many were rejected in one line before connecting, with ``line:col``, or
as "edited after mixc build".
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from faultproxy import free_ports, mixc_party, start_proxy, start_replay  # noqa: E402

FAULTS = ["sigkill", "sigstop", "reset", "garble", "truncate", "duplicate", "tls_garble",
          "proxy_kill", "old_session"]
SLACK = 3.0


def setup(d):
    from test_faults import PROGRAMS
    (d / "progs.py").write_text(PROGRAMS)
    builds = [subprocess.Popen([sys.executable, "-m", "mixc", "build", str(d / "progs.py"),
                                "--program", n, "-o", str(d / n)], cwd=d,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for n in ("medium", "long")]
    rng = np.random.default_rng(3)
    np.save(d / "a64.npy", rng.uniform(-0.5, 0.5, (64, 64)).astype(np.float32))
    np.save(d / "b64.npy", (0.5 * np.eye(64)).astype(np.float32))
    np.save(d / "a256.npy", rng.uniform(-0.01, 0.01, (256, 256)).astype(np.float32))
    np.save(d / "b256.npy", np.eye(256, dtype=np.float32))
    from mixc.tls import keygen
    keygen(d / "keys", ["alice", "bob", "dealer"])
    for b in builds:
        _, err = b.communicate()
        if b.returncode:
            raise SystemExit(f"build failed: {err}")


def parties(d, bundle, timeout, *, proxy=None, session=None, tls=None, start=None):
    peers = {n: ("127.0.0.1", p) for n, p in zip(["alice", "bob", "dealer"], free_ports(3))}
    size = "64" if bundle == "medium" else "256"
    alice_peers = dict(peers)
    holder = {}
    if proxy is not None:
        holder["proxy"], port = start_proxy(peers["bob"], **proxy)
        alice_peers["bob"] = ("127.0.0.1", port)
    out = d / "out"
    shutil.rmtree(out, ignore_errors=True)
    spec = {
        "dealer": dict(peers=peers),
        "bob": dict(peers=peers, inputs=[f"b={d / f'b{size}.npy'}"], output=out / "bob"),
        "alice": dict(peers=alice_peers, inputs=[f"a={d / f'a{size}.npy'}"],
                      output=out / "alice", extra=["--progress"]),
    }
    procs = {}
    for name in start or ("dealer", "bob", "alice"):
        kw = spec[name]
        procs[name] = mixc_party(d / bundle, name, kw.pop("peers"), timeout=timeout,
                                 session=session, tls=tls, **kw)
    return procs, peers, holder.get("proxy")


def judge(procs, since, limit, must_fail, d):
    """-> (survived, detect seconds, example line, problem)."""
    ends, example = [], None
    for name, p in procs.items():
        rc = p.wait(max(0.0, since + limit - time.monotonic()))
        if rc is None:
            return False, None, None, f"{name} still running {limit:g} s after the fault"
        if "Traceback" in p.text():
            return False, None, None, f"{name}: traceback"
        if rc == 0:
            if name in must_fail:
                return False, None, None, f"{name} exited 0"
            continue
        errs = p.errors()
        if len(errs) != 1 or not re.search(r"peer '[^']+' during ", errs[0]):
            return False, None, None, f"{name}: {errs or p.text()[-300:]}"
        if name in must_fail:       # when its error line appeared
            ends.append(min(t for t, _, ln in p.lines if "mixc: error: " in ln) - since)
        if name in must_fail and example is None:
            example = errs[0]
    out = d / "out"
    left = [f for f in out.rglob("*") if f.is_file()] if out.exists() else []
    if left:
        return False, None, None, f"outputs left: {left}"
    return True, max(ends) if ends else None, example, None


def trial(d, fault, timeout):
    procs, proxy, extra = {}, None, []
    try:
        if fault in ("sigkill", "sigstop"):
            procs, _, _ = parties(d, "long", timeout)
            procs["alice"].wait_line("[alice]", 60)
            procs["bob"].proc.send_signal(signal.SIGKILL if fault == "sigkill" else signal.SIGSTOP)
            since = time.monotonic()
            victim = procs.pop("bob")
            extra.append(victim)
            return judge(procs, since, timeout + SLACK + (2 if fault == "sigstop" else 0),
                         {"alice"}, d)
        if fault == "old_session":
            rec = d / "session1.bin"
            if not rec.exists():
                ps, _, px = parties(d, "medium", timeout, proxy=dict(record=rec),
                                    session="5e551011")
                for p in ps.values():
                    p.wait(60)
                    p.kill()
                px.kill()
            procs, peers, _ = parties(d, "medium", timeout, session="5e551012",
                                      start=("dealer", "bob"))
            replay = start_replay(peers["bob"], rec)
            extra.append(replay)
            since, _ = replay.wait_line("verdict", 30)
            ok, took, example, problem = judge({"bob": procs["bob"]}, since, timeout + SLACK,
                                               {"bob"}, d)
            late = mixc_party(d / "medium", "alice", peers, inputs=[f"a={d / 'a64.npy'}"],
                              output=d / "out" / "alice", timeout=timeout, session="5e551012")
            procs["alice"] = late
            rest = judge({"alice": late, "dealer": procs["dealer"]}, since,
                         2 * timeout + 2 * SLACK, {"alice"}, d)
            return (ok and rest[0], took, example, problem or rest[3])
        proxy_fault = {"reset": "reset", "garble": "garble", "truncate": "truncate",
                       "duplicate": "duplicate", "tls_garble": "garble",
                       "proxy_kill": "stall"}[fault]
        tls = d / "keys" if fault == "tls_garble" else None
        procs, _, proxy = parties(d, "medium", timeout, tls=tls,
                                  proxy=dict(fault=proxy_fault, at=3, tls=tls is not None))
        since, _ = proxy.wait_line(f"fault {proxy_fault}", 60)
        if fault == "proxy_kill":
            time.sleep(0.2)
            proxy.proc.send_signal(signal.SIGKILL)
            since = time.monotonic()
        return judge(procs, since, timeout + SLACK, {"alice", "bob"}, d)
    finally:
        for p in list(procs.values()) + extra + ([proxy] if proxy else []):
            p.kill()


def fuzz(d, count, seed=0):
    from mixc.cli import main
    import contextlib
    import io
    rnd = random.Random(seed)
    b = d / "fuzz"
    shutil.rmtree(b, ignore_errors=True)
    shutil.copytree(d / "medium", b)
    original = (b / "alice.mir").read_bytes()
    socks = []
    import socket
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        socks.append(s)
    peers = ",".join(f"{n}=127.0.0.1:{s.getsockname()[1]}"
                     for n, s in zip(["alice", "bob", "dealer"], socks))
    stats = {"mutations": 0, "rejected_one_line": 0, "line_col": 0, "edited": 0, "escaped": 0,
             "connected": 0}
    alphabet = b'%:@=(){}[],"<>.#0123456789 \n\tabcdefuirxyz_-\x00\xff'
    for _ in range(count):
        data = bytearray(original)
        kind = rnd.choice(["delete", "insert", "replace", "line", "truncate"])
        pos = rnd.randrange(len(data))
        if kind == "delete":
            del data[pos:pos + rnd.randint(1, 12)]
        elif kind == "insert":
            data[pos:pos] = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 4)))
        elif kind == "replace":
            data[pos] = rnd.choice(alphabet)
        elif kind == "line":
            lines = bytes(data).splitlines(keepends=True)
            i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"".join(lines))
        else:
            del data[pos:]
        if bytes(data) == original:
            continue
        (b / "alice.mir").write_bytes(bytes(data))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["run", str(b), "--party", "alice", "--peers", peers, "--input",
                         f"a={d / 'a64.npy'}", "--timeout", "1"])
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        stats["mutations"] += 1
        import select
        ready, _, _ = select.select(socks, [], [], 0)
        for s in ready:
            s.accept()[0].close()
            stats["connected"] += 1
        if code == 1 and len(lines) == 1 and lines[0].startswith("mixc: error: alice.mir"):
            stats["rejected_one_line"] += 1
            if re.match(r"mixc: error: alice\.mir:\d+:\d+: ", lines[0]):
                stats["line_col"] += 1
            elif "edited after mixc build" in lines[0]:
                stats["edited"] += 1
        else:
            stats["escaped"] += 1
    for s in socks:
        s.close()
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("faults", nargs="*", choices=FAULTS + [[]], default=[])
    ap.add_argument("--n", type=int, default=5, help="trials per fault")
    ap.add_argument("--timeout", type=float, default=5.0, help="--timeout of every party")
    ap.add_argument("--fuzz", type=int, default=500, help="mutated IR files to run (0: none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mixc-reliability-") as tmp:
        d = Path(tmp)
        setup(d)
        for fault in args.faults or FAULTS:
            times, survived, example, problems = [], 0, None, []
            for _ in range(args.n):
                ok, took, line, problem = trial(d, fault, args.timeout)
                if ok:
                    survived += 1
                    if took is not None:
                        times.append(took)
                    example = example or line
                else:
                    problems.append(problem)
            row = {"fault": fault, "trials": args.n, "survived": survived,
                   "timeout_s": args.timeout}
            if times:
                row["detect_s"] = {"min": round(min(times), 3),
                                   "median": round(statistics.median(times), 3),
                                   "max": round(max(times), 3)}
            if example:
                row["example"] = example
            if problems:
                row["problems"] = problems[:3]
            print(json.dumps(row), flush=True)
        if args.fuzz:
            print(json.dumps({"fuzz": "alice.mir", **fuzz(d, args.fuzz)}), flush=True)


if __name__ == "__main__":
    main()
