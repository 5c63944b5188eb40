"""``mixc run`` start-up, and what checking an untrusted bundle adds to it.

Start-up is the wall time from launching the command to the first op of the program
(``PartyExecutor.run`` entered, after every connection, key exchange and handshake),
the latest party's. Two conditions, alternated in one sitting, median of ``--reps``:

- ``first``: the bundle is new to this host (an empty verified-bundle cache), so
  ``mixc run`` checks it (``mixc.disclosure.verify_for_run``) before anything runs;
- ``cached``: the same run with the bundle already in the cache (only hashed).

``--mode party``: every party started at once as its own ``mixc run --party`` process
(one per host in deployment, each checking the bundle itself); ``--mode local``: one
``mixc run --local`` (checks once, then starts a child per party); ``--mode lone``: one
party (``--lone``, the first by default) alone on its host, as in deployment: its peers
are started first from a host that remembers the bundle and left ``--settle`` s to be
listening, then it is launched; its own wall time (from its launch) and CPU only.

    python benchmarks/startup.py build/lr --input x1=d/x1.npy --input x2=d/x2.npy \\
        --input y=d/y.npy [--mode party|local|lone] [--reps 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faultproxy import free_ports

PROBE_ENV = "MIXC_STARTUP_PROBE"   # file the probe appends "first-op <time>" lines to


def _probe_main(argv):
    """``mixc <argv>`` with the time of the program's first op appended to $PROBE_ENV;
    a ``--local`` run's children are started through this probe too."""
    from mixc import cli
    from mixc.runtime import executor

    run = executor.PartyExecutor.run

    def timed_run(self, *args, **kwargs):
        _log(f"first-op {self.party} {time.time():.6f} {_cpu():.6f}")
        return run(self, *args, **kwargs)

    executor.PartyExecutor.run = timed_run
    supervise = cli._supervise

    def timed_supervise(*args, **kwargs):  # a --local parent: started (and checked)
        _log(f"parent - - {_cpu():.6f}")
        return supervise(*args, **kwargs)

    cli._supervise = timed_supervise
    popen = cli.subprocess.Popen

    def probed_popen(cmd, *args, **kwargs):
        if list(cmd[1:3]) == ["-m", "mixc"]:
            cmd = [cmd[0], str(Path(__file__).resolve()), "--probe"] + list(cmd[3:])
        return popen(cmd, *args, **kwargs)

    cli.subprocess.Popen = probed_popen
    return cli.main(argv)


def _cpu():
    """CPU seconds of this process and of the children it has waited for (a party's
    forked bundle check)."""
    import resource
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _log(line):
    with open(os.environ[PROBE_ENV], "a") as f:
        f.write(line + "\n")


def _commands(args, parties, inputs_of):
    probe = [sys.executable, str(Path(__file__).resolve()), "--probe", "run", args.bundle]
    if args.mode == "local":
        return [probe + ["--local"] + [a for i in args.input for a in ("--input", i)]]
    ports = free_ports(len(parties))
    peers = ",".join(f"{p}=127.0.0.1:{port}" for p, port in zip(parties, ports))
    return [probe + ["--party", p, "--peers", peers, "--session", "00" * 16]
            + [a for i in inputs_of.get(p, []) for a in ("--input", i)] for p in parties]


def measure(args, parties, inputs_of, cache):
    """One launch: seconds from start to the latest party's first op, per party, and the
    CPU seconds every process spent until then (a --local parent: until its children
    were started and the bundle checked). ``--mode lone``: the lone party's alone."""
    with tempfile.TemporaryDirectory(prefix="mixc-startup-") as tmp:
        log = Path(tmp) / "probe.log"
        env = dict(os.environ, XDG_CACHE_HOME=cache, **{PROBE_ENV: str(log)})
        commands = _commands(args, parties, inputs_of)
        procs = []
        if args.mode == "lone":  # the peers from a host that remembers the bundle
            peer_env = dict(env, XDG_CACHE_HOME=args.warm)
            procs = [subprocess.Popen(c, env=peer_env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
                     for p, c in zip(parties, commands) if p != args.lone]
            commands = [c for p, c in zip(parties, commands) if p == args.lone]
            time.sleep(args.settle)
        t0 = time.time()
        procs += [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True) for c in commands]
        errors = [p.communicate()[1] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit("a run failed:\n" + "\n".join(e for e in errors if e))
        stamps, cpu = {}, 0.0
        for line in log.read_text().splitlines():
            kind, party, t, used = line.split()
            if args.mode == "lone" and party != args.lone:
                continue
            cpu += float(used)
            if kind == "first-op":
                stamps[party] = float(t) - t0
    want = [args.lone] if args.mode == "lone" else parties
    if sorted(stamps) != sorted(want):
        raise SystemExit(f"first ops seen for {sorted(stamps)}, expected {want}")
    return max(stamps.values()), stamps, cpu


def _measure_cached(args, parties, inputs_of, warm, tries=5):
    """``measure`` with the bundle remembered. The key covers mixc's sources, so an edit
    to them (another job in this checkout) makes a run check again: such a run (a new
    entry in the cache) is discarded and measured again."""
    remembered = Path(warm) / "mixc" / "verified"
    for _ in range(tries):
        before = set(os.listdir(remembered))
        got = measure(args, parties, inputs_of, warm)
        if set(os.listdir(remembered)) == before:
            return got
        print("cached run checked again (mixc's sources changed): measured again", flush=True)
    raise SystemExit(f"mixc's sources kept changing: {tries} cached runs checked the bundle")


def _compile_bytecode():
    """Write mixc's bytecode, as installing a package does: an editable checkout run with
    PYTHONDONTWRITEBYTECODE would otherwise compile every module it imports on each
    launch (the check imports a few more modules than a cached run)."""
    import compileall

    import mixc
    import mixc.runtime
    for package in (mixc, mixc.runtime):
        compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--mode", choices=("party", "local", "lone"), default="party")
    ap.add_argument("--lone", help="--mode lone: the party measured (default: the first)")
    ap.add_argument("--settle", type=float, default=4.0,
                    help="--mode lone: seconds its peers get to start listening")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    parties = list(manifest["parties"])
    from mixc.bundle import input_party
    inputs_of = {}
    for item in args.input:
        inputs_of.setdefault(input_party(manifest, item.split("=", 1)[0]), []).append(item)
    args.lone = args.lone or parties[0]
    if args.lone not in parties:
        raise SystemExit(f"--lone {args.lone}: not a party of the bundle ({', '.join(parties)})")
    _compile_bytecode()
    warm = args.warm = tempfile.mkdtemp(prefix="mixc-startup-cache-")
    env = dict(os.environ, XDG_CACHE_HOME=warm)
    subprocess.run([sys.executable, "-c", "import sys; from mixc.disclosure import "
                    "verify_for_run; verify_for_run(sys.argv[1])", args.bundle],
                   env=env, check=True)
    times = {"first": [], "cached": []}
    cpus = {"first": [], "cached": []}
    for rep in range(args.reps):
        for cond in ("first", "cached") if rep % 2 == 0 else ("cached", "first"):
            if cond == "cached":
                total, per_party, cpu = _measure_cached(args, parties, inputs_of, warm)
            else:
                cold = tempfile.mkdtemp(prefix="mixc-startup-cold-")
                total, per_party, cpu = measure(args, parties, inputs_of, cold)
            times[cond].append(total)
            cpus[cond].append(cpu)
            print(f"{cond:6s} {total:6.3f} s (cpu {cpu:6.3f} s)  " + "  ".join(
                f"{p} {t:.3f}" for p, t in sorted(per_party.items())), flush=True)
    result = {"bundle": args.bundle, "mode": args.mode, "reps": args.reps,
              "wall_s": times, "cpu_s": cpus}
    for what, got in (("wall", times), ("cpu", cpus)):
        for stat, f in (("median", statistics.median), ("min", min)):
            first, cached = f(got["first"]), f(got["cached"])
            result[f"{what}_{stat}"] = {"first": round(first, 3), "cached": round(cached, 3),
                                         "check_adds": round(first / cached - 1, 3)}
            print(f"{what} to the first op ({args.mode}, {stat} of {args.reps}): first check "
                  f"{first:.3f} s, cached {cached:.3f} s: checking adds "
                  f"{100 * (first / cached - 1):.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        sys.exit(_probe_main(sys.argv[2:]))
    main()
