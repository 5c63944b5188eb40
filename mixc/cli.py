"""The ``mixc`` command line (``mixc ...`` and ``python -m mixc ...`` are the same).

Usage::

    mixc build FILE.py [--program NAME] [-o DIR] [--passes a,b,...] [--cost-report]
    mixc run DIR --party NAME --peers NAME=HOST:PORT,... [--input NAME=FILE ...]
                 [--output OUTDIR] [--timeout S] [--session HEX] [--tls KEYDIR | --insecure]
                 [--progress|--no-progress]
    mixc run DIR --local [--input NAME=FILE ...] [--output OUTDIR] [--timeout S] [--tls KEYDIR]
                 [--check-ranges]
    mixc show DIR [--party NAME | --after PASS]
    mixc audit DIR
    mixc keygen KEYDIR (--parties a,b,... | --bundle DIR) [--days N]

Every subcommand takes ``--debug`` (show the traceback of an error).

``build`` imports FILE.py as a module (its directory goes first on
``sys.path``; the current directory is unchanged, so relative paths *inside*
the file are relative to where mixc runs -- build them from ``__file__`` to be
independent of it), finds its ``mixc.program`` objects, compiles one and
writes the bundle to DIR (default ``build/<program name>``).

``run --party`` runs one party of a bundle as its own process over TCP.
``--peers`` gives every party's address, this party's own included (it
listens there if some peer's name sorts before its own). All parties must use
the same session id: ``--session HEX`` if given, else one derived from the
bundle hash (so two runs of one bundle on the same addresses at the same time
would meet each other -- give distinct ``--session`` values for concurrent
runs). It is the label the parties meet under: the session itself is fresh,
made of 32 random bytes from every party, and the pairwise PRG keys come from
an X25519 exchange bound to it -- no key is sent. Plain TCP to a peer address
not on this host is refused unless ``--tls`` or ``--insecure``. Everything
that can be checked locally -- the bundle, the party, the
peers, every input's name, file, shape and dtype, the output directory -- is
checked before connecting. Outputs revealed to the party are written to
``OUTDIR/<name>.npy`` only after the whole program finished, each through a
temporary file and ``os.replace``; stale ``<name>.npy`` files of this party's
outputs are removed before connecting, so a failed run leaves none.

``--tls KEYDIR`` wraps every connection in mutual TLS (stdlib ``ssl``, TLS
1.3 only): party P presents ``KEYDIR/P.crt`` (key ``KEYDIR/P.key``) and
checks each peer's certificate against ``KEYDIR/ca.crt`` and that its
commonName is the peer party it expects; a connection from anyone else is
closed unanswered. A failing party tells its peers that it failed (an abort
frame with an error code and the op; the reason stays in its own log) before
it exits, and a party whose last messages were not all delivered
within the timeout fails too ("during close"). ``mixc keygen KEYDIR`` makes
a CA (``ca.crt``, ``ca.key``) and one certificate and key per party (from
``--parties`` or the parties of ``--bundle DIR``); it reuses an existing CA
in KEYDIR, so parties can be added later. Give each host ``ca.crt``,
``P.crt`` and ``P.key`` of its own party only; ``ca.key`` stays with whoever
issues certificates.

Inputs: ``--input NAME=FILE`` with a ``.npy`` or ``.csv`` file per input
array. A tree input (``mixc.Input(p, {"w": ..., "b": ...})``) takes one
``.npz`` holding one array per leaf, keyed by the leaf's path (``w``,
``layers.0.b``); a leaf may instead be given alone by its input name
(``params/w=w.npy``). Values NaN/inf or outside the fixed-point range of the
device that reads them are refused when loaded, naming the element's index.

``run --local`` starts every party of the bundle (the dealer too) as a
``python -m mixc run --party`` child process on 127.0.0.1, each given only
its own inputs and a fresh random session id. With ``--output OUTDIR`` party
P writes ``OUTDIR/P/<name>.npy``; without it the outputs are printed. If a
party fails, the others are stopped and the first root-cause error (a
party's own failure rather than "my peer went away") is reported.

``run --local --check-ranges`` runs every party in this one process instead
(threads over in-process links, as ``simulate``), so it can put the parties'
shares back together and warn -- one ``mixc: warning: FILE:LINE: ...`` line on
stderr per source line -- where a secret value leaves the range its op is
right in (``mixc.runtime.sanitizer``); outputs as with ``--local``.

Progress: a single updating line on stderr when stderr is a terminal and the
run has taken more than ~2 s; ``--progress`` forces it on from the start,
``--no-progress`` off. ``--local`` shows one combined line for all parties.

Errors: one line ``mixc: error: ...`` on stderr and exit status 1 (2 for
usage errors); a traceback only with ``--debug``.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from pathlib import Path

import numpy as np

from .errors import InputError, MixcError, PeerError
from .ir.core import collector_paused

PROG = "mixc"
DEFAULT_TIMEOUT = 60.0
PROGRESS_DELAY = 2.0        # seconds before an automatic progress line appears
_REPORT = "@mixc "          # prefix of the lines a --local child reports to its parent
_PRINT_LIMIT = 100          # print the values of outputs with at most this many elements


_RUN_EXAMPLES = """\
examples:
  mixc run build/lr --local --input x1=x1.npy --input x2=x2.csv --input y=y.npy
  # the same, one process per party (on any hosts; each lists every address):
  P=alice=10.0.0.1:7001,bob=10.0.0.2:7002,dealer=10.0.0.3:7003
  mixc run build/lr --party dealer --peers $P
  mixc run build/lr --party bob --peers $P --input x2=x2.csv --input y=y.npy
  mixc run build/lr --party alice --peers $P --input x1=x1.npy --output out/

all parties must use the same --session (default: derived from the bundle hash).
"""


class _Usage(Exception):
    """A usage error found after argument parsing (exit status 2)."""


# ----------------------------------------------------------------- entry point

def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    debug = getattr(args, "debug", False)
    try:
        return args.func(args) or 0
    except _Usage as e:
        args.subparser.print_usage(sys.stderr)
        print(f"{args.subparser.prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # stdout went away (``mixc show ... | head``): not an error worth a message
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 1
    except KeyboardInterrupt:
        _fail(args, "interrupted", None, debug)
        return 1
    except Exception as e:  # noqa: BLE001 - MixcError, OSError, or a bug in mixc: one line
        _fail(args, _describe(e, debug), e, debug)
        return 1


def _describe(e, debug=False) -> str:
    """The one-line message for an error; a non-user error says it is internal."""
    if isinstance(e, (MixcError, OSError)):
        return _one_line(e)
    return (f"internal error: {type(e).__name__}: {_one_line(e)}"
            + ("" if debug else " (rerun with --debug for the traceback)"))


def _fail(args, message, exc, debug):
    if debug and exc is not None:
        traceback.print_exception(exc)
    if getattr(args, "report", False) and not getattr(exc, "_mixc_reported", False):
        _report_error(exc, message)
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _one_line(e) -> str:
    if isinstance(e, OSError) and not isinstance(e, MixcError) and e.strerror:
        where = f"{e.filename}: " if e.filename is not None else ""
        return f"{where}{e.strerror}"
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


# -------------------------------------------------------------------- argparse

def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the full traceback of an error")
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="Compile a JAX program placed on devices into one program per party, "
                    "and run them.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser("build", parents=[common], help="compile a program file into a bundle",
                       description="Import FILE.py, compile its mixc.program and write the bundle "
                                   "(global IR, one IR file per party, graph.dot, audit.txt, "
                                   "manifest.json) to DIR.")
    b.add_argument("file", metavar="FILE.py")
    b.add_argument("--program", metavar="NAME", help="which program, if the file has several")
    b.add_argument("-o", "--output", metavar="DIR",
                   help="bundle directory (default build/<program>)")
    b.add_argument("--passes", metavar="a,b,...",
                   help="run only these passes of the pipeline (default: all)")
    b.add_argument("--cost-report", action="store_true",
                   help="print the cost model's bytes and rounds per protocol op")
    b.add_argument("--prefer", metavar="P,Q,...",
                   help="protocols to choose wherever they apply (e.g. masking); default: "
                        "the program's own @mixc.program(prefer=...)")
    b.set_defaults(func=cmd_build, subparser=b)

    r = sub.add_parser("run", parents=[common], help="run a bundle: one party, or all locally",
                       description="Run one party of a bundle over TCP (--party, --peers), or "
                                   "every party as a local process (--local).",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_RUN_EXAMPLES)
    r.add_argument("bundle", metavar="DIR")
    mode = r.add_mutually_exclusive_group(required=True)
    mode.add_argument("--party", metavar="NAME", help="the party this process runs")
    mode.add_argument("--local", action="store_true",
                      help="start every party as a local process on 127.0.0.1")
    r.add_argument("--input", action="append", default=[], metavar="NAME=FILE",
                   help="an input (.npy or .csv; a tree input's leaves in one .npz, keyed "
                        "by their paths); repeat for each input")
    r.add_argument("--peers", action="append", default=[], metavar="NAME=HOST:PORT,...",
                   help="every party's address, this party's own included")
    r.add_argument("--output", metavar="OUTDIR",
                   help="write revealed outputs as OUTDIR/<name>.npy (--local: OUTDIR/<party>/)")
    r.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"bound on any wait for a peer (default {DEFAULT_TIMEOUT:g})")
    r.add_argument("--session", metavar="HEX",
                   help="session id all parties share (default: derived from the bundle hash; "
                        "--local: random)")
    r.add_argument("--tls", metavar="KEYDIR",
                   help="mutual TLS with KEYDIR/ca.crt and KEYDIR/<party>.crt/.key "
                        "(made by mixc keygen)")
    r.add_argument("--insecure", action="store_true",
                   help="allow plain TCP (no --tls) to peers on other hosts: the network "
                        "then reads and can change every message")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="force the progress line on/off (default: on a terminal, after ~2 s)")
    r.add_argument("--check-ranges", action="store_true",
                   help="with --local: run every party in this process and warn where a "
                        "secret value leaves the range its op is right in (as simulate)")
    r.add_argument("--report", action="store_true", help=argparse.SUPPRESS)  # --local child
    r.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # --local child's listener
    # --local child: the parent checks the bundle meanwhile and writes its verdict here
    r.add_argument("--verdict-fd", type=int, help=argparse.SUPPRESS)
    r.set_defaults(func=cmd_run, subparser=r)

    s = sub.add_parser("show", parents=[common], help="print a party's program or the global IR",
                       description="Print the global IR after all passes (default), after one "
                                   "pass (--after), or one party's program (--party).")
    s.add_argument("bundle", metavar="DIR")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--party", metavar="NAME")
    which.add_argument("--after", metavar="PASS")
    s.set_defaults(func=cmd_show, subparser=s)

    a = sub.add_parser("audit", parents=[common], help="print the leakage report",
                       description="Print the bundle's audit: trust assumptions, disclosures, "
                                   "and who sees each value in what form.")
    a.add_argument("bundle", metavar="DIR")
    a.set_defaults(func=cmd_audit, subparser=a)

    k = sub.add_parser("keygen", parents=[common],
                       help="make a CA and a TLS certificate + key per party (for run --tls)",
                       description="Write KEYDIR/ca.crt and ca.key (reused if present) and, for "
                                   "each party, KEYDIR/<party>.crt and <party>.key, for "
                                   "mixc run --tls KEYDIR.")
    k.add_argument("dir", metavar="KEYDIR")
    who = k.add_mutually_exclusive_group()
    who.add_argument("--parties", metavar="a,b,...", help="the parties to make certificates for")
    who.add_argument("--bundle", metavar="DIR", help="make certificates for this bundle's parties")
    k.add_argument("--days", type=_positive_int, default=365, metavar="N",
                   help="how long the certificates are valid (default 365 days)")
    k.set_defaults(func=cmd_keygen, subparser=k)
    return parser


def _positive(text, convert, kind, must_be):
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
    if not 0 < value < float("inf"):  # the comparison also rejects NaN
        raise argparse.ArgumentTypeError(f"must be {must_be}, not {text!r}")
    return value


def _positive_int(text):
    return _positive(text, int, "a whole number", "positive")


def _positive_float(text):
    return _positive(text, float, "a number", "a positive number of seconds")


# ----------------------------------------------------------------------- build

def cmd_build(args):
    from .bundle import build
    from .frontend import Program
    from .passes import PIPELINE

    path = Path(args.file)
    if path.suffix != ".py":
        raise MixcError(f"{args.file}: not a Python file (mixc build takes FILE.py)")
    if not path.is_file():
        raise MixcError(f"{args.file}: no such file" if not path.exists()
                        else f"{args.file}: not a file")
    passes = None
    if args.passes is not None:
        names = [n for n, _ in PIPELINE]
        passes = [p.strip() for p in args.passes.split(",") if p.strip()]
        unknown = [p for p in passes if p not in names]
        if unknown or not passes:
            raise MixcError(f"unknown pass(es) {', '.join(unknown) or repr(args.passes)}; "
                            f"the pipeline is {', '.join(names)}")

    module = _import_file(path, args.file)
    found = []
    for var, value in vars(module).items():
        if isinstance(value, Program) and all(value is not p for _, p in found):
            found.append((var, value))
    if not found:
        raise MixcError(f"{args.file}: no mixc.program in this file (decorate a function "
                        "with @mixc.program)")
    if args.program is not None:
        chosen = [p for var, p in found if args.program in (var, p.name)]
        if not chosen:
            raise MixcError(f"{args.file}: no program named {args.program!r} (programs: "
                            f"{', '.join(p.name for _, p in found)})")
        prog = chosen[0]
    elif len(found) > 1:
        listed = ", ".join(p.name for _, p in found)
        raise MixcError(f"{args.file} has {len(found)} programs ({listed}); "
                        "choose one with --program NAME")
    else:
        prog = found[0][1]

    try:
        prefer = (None if args.prefer is None
                  else [p.strip() for p in args.prefer.split(",") if p.strip()])
        bundle = build(prog, passes=passes, prefer=prefer)
    except MixcError as e:
        from .errors import TraceError
        located = _author_error(e, path, args.file) if isinstance(e, TraceError) else None
        if located is None or located is e:
            raise
        raise located from e
    except Exception as e:  # an error in the author's code while tracing
        located = _author_error(e, path, args.file)
        if located is None or located is e:
            raise
        raise located from e

    out = Path(args.output) if args.output else Path("build") / prog.name
    bundle.save(out)
    _print_build_summary(bundle, out)
    if args.cost_report:
        _print_cost_report(bundle)
    return 0


def _import_file(path, shown):
    """Run FILE.py as a fresh module; an error in it is one line naming FILE:LINE."""
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = "_mixc_program_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, str(path))
    if spec is None or spec.loader is None:
        raise MixcError(f"{shown}: cannot import this file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        where = shown if e.filename and _same_file(e.filename, path) else (e.filename or shown)
        if e.lineno is None:            # e.g. null bytes: not Python source at all
            raise MixcError(f"{where}: not Python source ({type(e).__name__}: {e.msg})") from e
        col = f":{e.offset}" if e.offset else ""
        raise MixcError(f"{where}:{e.lineno}{col}: {type(e).__name__}: {e.msg}") from e
    except BaseException as e:
        sys.modules.pop(name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        if isinstance(e, SystemExit):
            raise MixcError(f"{shown}: the file called exit({e.code!r}) while being "
                            "imported") from e
        located = _author_error(e, path, shown)
        if located is None or located is e:
            raise
        raise located from e
    return module


def _author_error(exc, path, shown):
    """``FILE:LINE: Error: message`` from the last traceback frame inside FILE.py."""
    from .errors import TraceError
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if _same_file(frame.filename, path):
            line = frame.lineno
    if line is None:
        return None
    if isinstance(exc, TraceError):      # already names the author's line (the call)...
        inner = None                     # ... and the line inside the traced function?
        cause = exc.__cause__
        if cause is not None:
            for frame in traceback.extract_tb(cause.__traceback__):
                if _same_file(frame.filename, path):
                    inner = frame.lineno
        text = _one_line(exc)
        if inner is not None and not text.split(": ")[0].endswith(f":{inner}"):
            return TraceError(f"{text} (raised at {shown}:{inner})")
        return exc
    what = _one_line(exc)
    if isinstance(exc, MixcError):       # e.g. a config error: its own text says what
        return MixcError(f"{shown}:{line}: {what}")
    return MixcError(f"{shown}:{line}: {type(exc).__name__}: {what}")


def _same_file(a, b):
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, TypeError, ValueError):
        return False


def _print_build_summary(bundle, out):
    m = bundle.manifest
    print(f"built {bundle.name!r} into {out}")
    print(f"  parties: {', '.join(bundle.parties)}")
    if bundle.programs:
        ops = ", ".join(f"{p} {len(bundle.programs[p].nodes)}" for p in bundle.parties
                        if p in bundle.programs)
        print(f"  ops per party: {ops}")
    else:
        print("  no per-party programs (the partition pass did not run)")
    ins = ", ".join(f"{n} ({s['party']}, {s['dtype']}{list(s['shape'])})"
                    for n, s in m["inputs"].items())
    print(f"  inputs: {ins or 'none'}")
    outs = ", ".join(f"{n} -> {p}" for n, p in m["outputs"].items())
    print(f"  outputs: {outs or 'none'}")
    print(f"  passes: {', '.join(m['passes'])}")


def _print_cost_report(bundle):
    report = getattr(bundle, "cost_report", None)
    if report is None:
        print("no cost report: the select_protocols pass did not run")
        return
    header = ("value", "op", "protocol", "bytes", "rounds", "loc")
    rows = [("-" if vid is None else f"%{vid}", str(op), str(proto), str(cost.bytes),
             str(cost.rounds), str(loc or ""))
            for vid, op, proto, cost, loc in report.rows]
    total = report.total
    footer = ("total", "", "", str(total.bytes), str(total.rounds), "")
    widths = [max(len(r[i]) for r in [header, footer, *rows]) for i in range(len(header))]
    right = {3, 4}

    def fmt(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    print(f"\ncost report (network profile {report.network.name!r}):")
    print(fmt(header))
    for r in rows:
        print(fmt(r))
    print(fmt(footer))
    try:
        secs = report.network.seconds(total)
        print(f"estimated communication time on {report.network.name}: {secs * 1e3:.3f} ms")
    except Exception:  # noqa: BLE001 - an estimate only
        pass


# ------------------------------------------------------------- bundles on disk

def _load_manifest(directory):
    d = Path(directory)
    path = d / "manifest.json"
    if not d.is_dir():
        raise MixcError(f"{directory}: no such bundle directory" if not d.exists()
                        else f"{directory}: not a directory")
    if not path.is_file():
        raise MixcError(f"{directory}: not a mixc bundle (no manifest.json); "
                        "make one with mixc build")
    try:
        manifest = json.loads(path.read_text())
        for key in ("parties", "inputs", "outputs", "hash", "passes"):
            manifest[key]
    except (ValueError, KeyError, TypeError) as e:
        raise MixcError(f"{path}: not a valid mixc manifest ({_one_line(e)})") from None
    return manifest


def _check_runnable(directory, manifest, parties):
    from .bundle import _filename
    for p in parties:
        if not (Path(directory) / f"{_filename(p)}.mir").is_file():
            hint = (" (the bundle was built without the partition pass)"
                    if "partition" not in manifest["passes"] else "")
            raise MixcError(f"bundle {directory} has no program for party {p!r}{hint}")


def _check_party(directory, manifest, party):
    if party not in manifest["parties"]:
        raise MixcError(f"bundle {directory} was built for parties "
                        f"{', '.join(manifest['parties'])}, not {party!r}")


# ------------------------------------------------------------------------ show

def cmd_show(args):
    from .bundle import _filename
    manifest = _load_manifest(args.bundle)
    d = Path(args.bundle)
    if args.party is not None:
        _check_party(args.bundle, manifest, args.party)
        _check_runnable(args.bundle, manifest, [args.party])
        text = (d / f"{_filename(args.party)}.mir").read_text()
    elif args.after is not None:
        passes = list(manifest["passes"])
        if args.after not in passes:
            raise MixcError(f"unknown pass {args.after!r}; this bundle has the IR after: "
                            f"{', '.join(passes)}")
        f = d / "after" / f"{args.after}.mir"
        if not f.is_file():
            raise MixcError(f"{f}: missing from the bundle")
        text = f.read_text()
    else:
        f = d / "global.mir"
        if not f.is_file():
            raise MixcError(f"{f}: missing from the bundle")
        text = f.read_text()
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_audit(args):
    """The audit of the party programs themselves (not the stored audit.txt): refused,
    file:line, if one discloses more than the global program's reveals and tos."""
    from .disclosure import check_bundle
    _load_manifest(args.bundle)
    sys.stdout.write(check_bundle(args.bundle, label=str(args.bundle)).audit())
    return 0


# ---------------------------------------------------------------------- keygen

def cmd_keygen(args):
    from .tls import keygen
    if args.bundle is None and args.parties is None:
        if (Path(args.dir) / "manifest.json").is_file():
            raise _Usage(f"{args.dir} is a bundle, which every host gets: keep keys out of it "
                         f"(mixc keygen KEYDIR --bundle {args.dir})")
        raise _Usage("say whose keys to make: --parties a,b,... or --bundle DIR")
    if args.bundle is not None:
        parties = list(_load_manifest(args.bundle)["parties"])
    else:
        parties = [p.strip() for p in args.parties.split(",")]
    written = keygen(args.dir, parties, days=args.days)
    for path in written:
        print(f"wrote {path}")
    d = Path(args.dir)
    print(f"give each party's host {d / 'ca.crt'} and its own <party>.crt and <party>.key; "
          f"keep {d / 'ca.key'} to itself; run with --tls DIR")
    return 0


# ---------------------------------------------------------------------- inputs

def _parse_assignments(items, what):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise _Usage(f"{what} takes NAME=FILE, not {item!r}")
        if name in out:
            raise _Usage(f"{what} {name!r} given twice")
        out[name] = value
    return out


def _check_input_names(manifest, given, party=None):
    """Every NAME of ``given`` is an input array or a tree parameter (whose .npz gives
    each of its leaves), of ``party`` if one is given; none of ``party``'s (or of any
    party's) inputs is missing."""
    from .bundle import grouped_input_names, input_party, input_trees
    declared, trees = manifest["inputs"], input_trees(manifest)
    unknown = sorted(n for n in given if n not in declared and n not in trees)
    if unknown:
        takes = ", ".join(grouped_input_names(manifest, declared)) or "no inputs"
        raise InputError(f"unknown input(s) {', '.join(unknown)} (the program takes {takes})")
    twice = sorted(n for n in given if declared.get(n, {}).get("tree") in given)
    if twice:
        raise InputError(f"input {twice[0]!r} given twice: alone and in the .npz of "
                         f"{declared[twice[0]]['tree']!r}")
    if party is not None:
        foreign = sorted(n for n in given if input_party(manifest, n) != party)
        if foreign:
            n = foreign[0]
            raise InputError(f"input {n!r} belongs to party {input_party(manifest, n)!r}, not "
                             f"{party!r}: give each party only its own inputs")
    covered = {leaf for n in given for leaf in trees.get(n, [n])}
    missing = [n for n, spec in declared.items()
               if n not in covered and party in (None, spec["party"])]
    if missing:
        owners = ", ".join(f"{n} (party {input_party(manifest, n)}"
                           + (f", an .npz of leaves {', '.join(_leaf_keys(manifest, n))})"
                              if n in trees else ")")
                           for n in grouped_input_names(manifest, missing))
        raise InputError(f"missing input(s) {owners}: pass --input NAME=FILE")


def _leaf_keys(manifest, tree):
    """The array names of a tree parameter's .npz: its leaves' paths."""
    from .bundle import input_trees
    return [manifest["inputs"][leaf]["leaf"] for leaf in input_trees(manifest)[tree]]


def load_inputs(manifest, given):
    """Input name -> checked array, for each NAME=FILE of ``given`` (names checked)."""
    from .bundle import input_trees
    trees = input_trees(manifest)
    inputs = {}
    for n, f in given.items():
        if n in trees:
            inputs.update(load_tree_input(n, f, {leaf: manifest["inputs"][leaf]
                                                 for leaf in trees[n]}))
        else:
            inputs[n] = load_input(n, f, manifest["inputs"][n])
    return inputs


def _existing_file(name, path):
    p = Path(path)
    if not p.exists():
        raise InputError(f"input {name!r}: no such file {path}")
    if not p.is_file():
        raise InputError(f"input {name!r}: {path} is not a file")
    return p


def load_tree_input(name, path, leaves):
    """Read the .npz ``path`` of tree parameter ``name``: one array per leaf of
    ``leaves`` (input name -> manifest record), keyed by the leaf's path."""
    import zipfile
    p = _existing_file(name, path)
    keys = {spec["leaf"]: leaf for leaf, spec in leaves.items()}
    if p.suffix.lower() != ".npz":
        raise InputError(f"input {name!r} is a tree of arrays: give an .npz holding "
                         f"{', '.join(keys)}, not {path}")
    try:
        archive = np.load(p, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"input {name!r}: {path} holds one array, not one per leaf "
                             f"({', '.join(keys)})")
        with archive:
            extra = sorted(set(archive.files) - set(keys))
            if extra:
                raise InputError(f"input {name!r}: {path} holds {extra[0]!r}, which is not a "
                                 f"leaf of {name} (its leaves: {', '.join(keys)})")
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise InputError(f"input {name!r}: {path} has no array {missing[0]!r} "
                                 f"(the leaves of {name}: {', '.join(keys)})")
            arrays = {keys[k]: archive[k] for k in keys}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"input {name!r}: cannot read {path} as .npz: "
                         f"{_one_line(e)}") from None
    return {leaf: _checked(leaf, arrays[leaf], leaves[leaf], path) for leaf in leaves}


def _checked(name, arr, spec, path):
    """``arr`` as input ``name`` (declared by manifest record ``spec``), checked."""
    from .runtime.executor import check_encodable, check_input
    try:
        arr = check_input(name, arr, spec["dtype"], tuple(spec["shape"]))
        if "frac_bits" in spec:
            check_encodable(name, spec["party"], arr, spec["frac_bits"], spec["ring_bits"])
    except InputError as e:
        raise InputError(f"{e} (read from {path})") from None
    return arr


def load_input(name, path, spec):
    """Read ``path`` (.npy or .csv) as input ``name`` declared by ``spec``; checked."""
    p = _existing_file(name, path)
    shape = tuple(spec["shape"])
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"input {name!r}: cannot read {path} as .npy: "
                             f"{_one_line(e)}") from None
        if not isinstance(arr, np.ndarray):
            raise InputError(f"input {name!r}: {path} holds several arrays, not one")
    elif suffix == ".csv":
        arr = _load_csv(name, p, path, spec["dtype"], shape)
    else:
        raise InputError(f"input {name!r}: {path}: unsupported file type (use .npy or .csv)")
    return _checked(name, arr, spec, path)


def _load_csv(name, p, shown, dtype, shape):
    import warnings
    ndmin = min(len(shape), 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dtype == "bool":
                raw = np.loadtxt(p, delimiter=",", ndmin=ndmin, dtype=str)
                low = np.char.lower(np.char.strip(raw))
                bad = ~np.isin(low, ["0", "1", "true", "false"])
                if bad.any():
                    raise ValueError(f"{raw[bad].flat[0]!r} is not a boolean (0/1/true/false)")
                arr = np.isin(low, ["1", "true"])
            else:
                arr = np.loadtxt(p, delimiter=",", ndmin=ndmin, dtype=np.float64)
                if dtype == "i32":
                    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                        raise ValueError("holds non-integer values but the input is int32")
                    if arr.size and (arr.min() < -2**31 or arr.max() >= 2**31):
                        raise ValueError("holds values out of the int32 range")
                    arr = arr.astype(np.int32)
                else:
                    arr = arr.astype(np.float32)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        why = _one_line(e).split("; use `usecols`")[0]     # numpy's hint does not apply
        raise InputError(f"input {name!r}: cannot read {shown} as CSV: {why}") from None
    if arr.size == 0 and int(np.prod(shape, dtype=np.int64)) != 0:
        raise InputError(f"input {name!r}: {shown} holds no values (the program declares "
                         f"shape {shape})")
    if arr.shape != shape and arr.size == int(np.prod(shape, dtype=np.int64)):
        arr = arr.reshape(shape)
    return arr


# ------------------------------------------------------------------------- run

def cmd_run(args):
    if args.local:
        if args.peers:
            raise _Usage("--peers is for --party; --local picks loopback addresses itself")
        return _run_checked(args) if args.check_ranges else _run_local(args)
    if args.check_ranges:
        raise _Usage("--check-ranges needs --local: only a run holding every party's shares "
                     "can check what they stand for")
    return _run_party(args)


def _run_checked(args):
    """``run --local --check-ranges``: every party in this process, one thread each over
    in-process links (as ``simulate``), so the range sanitizer sees every party's shares;
    each RangeWarning is one ``mixc: warning:`` line on stderr."""
    import warnings
    from .bundle import Bundle, simulate
    from .errors import RangeWarning
    if args.tls is not None:
        raise _Usage("--check-ranges runs every party in one process, with no connections "
                     "to secure: drop --tls")
    manifest = _load_manifest(args.bundle)
    given = _parse_assignments(args.input, "--input")
    _check_input_names(manifest, given)
    inputs = load_inputs(manifest, given)
    from .disclosure import verify_for_run
    checked = verify_for_run(args.bundle, label=str(args.bundle))  # before any program runs
    bundle = Bundle.load(args.bundle, checked=checked)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", RangeWarning)
        result = simulate(bundle, inputs, timeout=args.timeout, check_ranges=True)
    for w in seen:
        if issubclass(w.category, RangeWarning):
            print(f"mixc: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for name, value in _outputs_by_name(manifest, result).items():
        party = manifest["outputs"][name]
        if args.output:
            outdir = Path(args.output) / party
            outdir.mkdir(parents=True, exist_ok=True)
            write_outputs(outdir, {name: value})
            print(f"{party}: wrote {outdir / f'{name}.npy'}")
        else:
            _print_output(name, party, value)
    print(f"audit: mixc audit {args.bundle}")
    return 0


def _outputs_by_name(manifest, result):
    """``simulate``'s result (the structure the program returned) by output name."""
    names = list(manifest["outputs"])
    structure = manifest["structure"]
    if structure == "dict":
        return dict(result)
    if structure == "tuple":
        return dict(zip(names, result))
    if structure == "single":
        return {names[0]: result}
    return {}


def _party_addresses(peers, parties):
    """--peers as party -> (host, port), one for each of the bundle's ``parties``."""
    if not peers:
        raise _Usage("--party needs --peers NAME=HOST:PORT,... with every party's address")
    addresses = _parse_peers(peers)
    missing = [p for p in parties if p not in addresses]
    if missing:
        raise _Usage(f"--peers has no address for {', '.join(missing)} (the bundle's parties: "
                     f"{', '.join(parties)})")
    extra = [p for p in addresses if p not in parties]
    if extra:
        raise _Usage(f"--peers names {', '.join(extra)}, not a party of this bundle "
                     f"({', '.join(parties)})")
    return addresses


def _parse_peers(items):
    addresses = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, addr = part.partition("=")
            host, colon, port = addr.rpartition(":")
            if not sep or not name or not colon or not host:
                raise _Usage(f"--peers takes NAME=HOST:PORT,..., not {part!r}")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            try:
                port_num = int(port)
            except ValueError:
                port_num = -1
            if not 0 < port_num < 65536:
                raise _Usage(f"--peers: bad port {port!r} for {name!r}")
            if name in addresses:
                raise _Usage(f"--peers: party {name!r} given twice")
            addresses[name] = (host, port_num)
    return addresses


def _session(args, manifest):
    if args.session is not None:
        try:
            raw = bytes.fromhex(args.session)
        except ValueError:
            raise _Usage(f"--session takes a hex string, not {args.session!r}") from None
        if not raw:
            raise _Usage("--session must not be empty")
        return args.session.lower()
    return hashlib.sha256(b"mixc-session\0" + manifest["hash"].encode()).hexdigest()[:32]


def _output_names(manifest, party):
    names = [n for n, p in manifest["outputs"].items() if p == party]
    for n in names:
        if not n or n in (".", "..") or "/" in n or os.sep in n or "\0" in n:
            raise MixcError(f"output name {n!r} cannot be a file name")
    return names


def _prepare_output_dir(outdir, names):
    """Create OUTDIR, prove it writable, and remove stale outputs of this party."""
    d = Path(outdir)
    d.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".mixc-probe-", dir=d)
    os.close(fd)
    os.unlink(probe)
    for n in names:
        stale = d / f"{n}.npy"
        if stale.is_file() or stale.is_symlink():
            stale.unlink()
    return d


def write_outputs(outdir, outputs):
    """Write every output as OUTDIR/<name>.npy via temp files, then os.replace each."""
    d = Path(outdir)
    done = []
    try:
        for name, value in outputs.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".npy.tmp", dir=d)
            done.append((tmp, d / f"{name}.npy"))
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.asarray(value), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        for tmp, final in done:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in done:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    return [final for _, final in done]


def _run_party(args):
    from .runtime.executor import PartyExecutor
    from .runtime.links import TcpLink, abort_code

    party, directory = args.party, args.bundle
    # -- everything checkable without a peer, before connecting --------------
    manifest = _load_manifest(directory)
    _check_party(directory, manifest, party)
    _check_runnable(directory, manifest, [party])
    program = None  # a --local child: the parent's checked program, once it passes
    if args.verdict_fd is None:  # else the --local parent checks while this party connects
        program, check_passed = _checked_program(directory, party)
    if args.insecure and args.tls is not None:
        raise _Usage("--insecure allows plain TCP to other hosts; it cannot go with --tls")
    addresses = _party_addresses(args.peers, manifest["parties"])
    session = _session(args, manifest)
    given = _parse_assignments(args.input, "--input")
    _check_input_names(manifest, given, party)
    inputs = load_inputs(manifest, given)
    names = _output_names(manifest, party)
    progress = _progress_for(args, party)

    def executor_of(program):
        return PartyExecutor(program, party, None, inputs,
                             progress=progress.update if progress else None)

    executor = executor_of(program) if program is not None else None
    tls = None
    if args.tls is not None:
        from .tls import contexts
        tls = contexts(args.tls, party)
    outdir = _prepare_output_dir(args.output, names) if args.output and names else None

    # -- the run ----------------------------------------------------------------
    link = None
    try:
        try:
            listener = None
            if args.listen_fd is not None:
                listener = socket.socket(fileno=args.listen_fd)
            link = TcpLink.connect(party, addresses, session, manifest["hash"],
                                   timeout=args.timeout, ssl_context=tls,
                                   check_cert_names=tls is not None, listener=listener,
                                   insecure=args.insecure)
        except PeerError as e:
            raise _connect_error(e, party) from None
        if executor is None:
            executor = executor_of(_await_verdict(args.verdict_fd))
            gc.freeze()
        else:
            check_passed()
        executor.link = link
        outputs = executor.run()
        undelivered = link.close()
        if undelivered:
            peer, reason = next(iter(undelivered.items()))
            raise PeerError(peer, reason, op="close")
    except BaseException as e:
        message = ("interrupted" if isinstance(e, KeyboardInterrupt)
                   else _describe(e, getattr(args, "debug", False)))
        if args.report and isinstance(e, Exception):
            # tell the parent first: once this link closes, the peers fail too
            _report_error(e, message)
            try:
                e._mixc_reported = True
            except AttributeError:
                pass
        if link is not None:   # the peers get a code and the op; the reason stays here
            link.abort(abort_code(e), getattr(e, "op", None) or getattr(e, "mixc_op", None))
        raise
    finally:
        if progress:
            progress.finish()
    _deliver(party, names, outputs, outdir, args.report)
    return 0


def _deliver(party, names, outputs, outdir, report):
    """A finished party's revealed outputs, written to ``outdir`` or printed; a ``--local``
    child (``report``) prints nothing itself and tells its parent it is done."""
    missing = [n for n in names if n not in outputs]
    if missing:
        raise MixcError(f"party {party!r} finished without output(s) {', '.join(missing)}")
    if outdir is not None:
        for path in write_outputs(outdir, {n: outputs[n] for n in names}):
            print(f"{party}: wrote {path}")
    elif not report:
        for n in names:
            _print_output(n, party, outputs[n])
    if not names and not report:
        print(f"{party}: finished; no output is revealed to this party")
    if report:
        _report("done")


@collector_paused()  # 10^5 IR objects made that live on: no collector rescans them
def _checked_program(directory, party):
    """``party``'s program and ``finish``: the bundle is checked (``mixc.disclosure``:
    what every program discloses; its last step goes on while this party connects, and
    ``finish()`` returns once it passed), or the program is read from its file when this
    host remembers the bundle (or another party's process here has just checked it)."""
    from .bundle import Bundle
    from .disclosure import RunCheck

    def read():
        return Bundle.load(directory, parties=[party]).programs[party]

    def passed():
        return None

    pending = RunCheck(directory, label=str(directory))
    program, finish = None, passed
    if pending.needed:  # a peer on this host may be checking it: read the file meanwhile
        started, program = pending.run_once_per_host(read, checking=pending.start)
        if started is not None:
            programs, finish = started
            program = programs[party]
    else:
        program = read()
    gc.freeze()  # it lives as long as this process: never rescan it
    return program, finish


def _await_verdict(fd):
    """Block until the ``--local`` parent has checked the bundle; -> this party's program
    as checked (the compiler's lowering, the file's text to the byte), which the parent
    sends before its ``ok`` (pickled: the parent is this user's own mixc, and unpickling is
    ~15x faster than parsing the file again)."""
    with os.fdopen(fd, "rb") as f:
        try:
            with collector_paused():
                program = pickle.load(f)
        except Exception:  # noqa: BLE001 - EOF or a partial pickle: no program was handed over
            program = None
        if program is None or f.readline() != b"ok\n":
            raise MixcError("the bundle check did not pass: this party runs nothing")
        return program


def _connect_error(e, party):
    """A PeerError of the connection phase, saying so ("during connect")."""
    text = str(e)
    prefix = f"peer {e.peer!r}: "
    message = text[len(prefix):] if text.startswith(prefix) else text
    if e.peer == party:                 # e.g. cannot listen on our own address
        return MixcError(message)
    if e.op is not None:
        return e
    return PeerError(e.peer, message, op="connect")


def _print_output(name, party, value):
    arr = np.asarray(value)
    print(f"{name} (revealed to {party}): {arr.dtype}{list(arr.shape)}")
    if arr.size <= _PRINT_LIMIT:
        text = np.array2string(arr, precision=6, suppress_small=True, max_line_width=100)
        print("  " + text.replace("\n", "\n  "))


# ---- progress and the child -> parent protocol of --local

def _report(line):
    sys.stderr.write(_REPORT + line.replace("\n", " ") + "\n")
    sys.stderr.flush()


def _report_error(exc, message):
    kind = "peer" if isinstance(exc, PeerError) else "root"
    _report(f"error {kind} {message}")


class _StatusLine:
    """One updating line on stderr: on a terminal after ``delay`` s, or forced."""

    def __init__(self, forced=None, delay=PROGRESS_DELAY, interval=0.1):
        self.enabled = forced if forced is not None else _stderr_is_tty()
        self.delay = 0.0 if forced else delay
        self.interval = interval
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False
        self.lock = threading.Lock()

    def show(self, text, final=False):
        if not self.enabled:
            return
        now = time.monotonic()
        with self.lock:
            if now - self.start < self.delay:
                return
            if not final and now - self.last < self.interval:
                return
            self.last = now
            sys.stderr.write("\r" + text + "\x1b[K")
            sys.stderr.flush()
            self.shown = True

    def clear(self):
        with self.lock:
            if self.shown:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
                self.shown = False


def _stderr_is_tty():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _PartyProgress:
    def __init__(self, party, report, forced):
        self.party, self.report = party, report
        self.line = None if report else _StatusLine(forced)
        self.last = 0.0

    def update(self, done, total):
        if self.report:
            now = time.monotonic()
            if now - self.last >= 0.2 or done == total:
                self.last = now
                _report(f"progress {done} {total}")
        else:
            self.line.show(f"[{self.party}] {done}/{total} ops", final=done == total)

    def finish(self):
        if self.line is not None:
            self.line.clear()


def _progress_for(args, party):
    if args.report:
        return _PartyProgress(party, True, None)
    if args.progress is False:
        return None
    line = _PartyProgress(party, False, args.progress)
    return line if line.line.enabled else None


# ---- --local

class _Child:
    def __init__(self, party, proc):
        self.party, self.proc = party, proc
        self.progress = None
        self.error = None           # (kind, message) reported by the child
        self.error_line = None      # its "mixc: error: ..." line
        self.tail = deque(maxlen=20)
        self.failed_at = None       # monotonic time its failure was first seen
        self.killed = False
        self.reader = None


def _run_local(args):
    directory = args.bundle
    manifest = _load_manifest(directory)
    parties = list(manifest["parties"])
    _check_runnable(directory, manifest, parties)
    given = _parse_assignments(args.input, "--input")
    _check_input_names(manifest, given)
    load_inputs(manifest, given)          # fail here, once, rather than in every child
    session = args.session.lower() if args.session else os.urandom(16).hex()
    if args.session:
        _session(args, manifest)          # validates the hex
    for p in parties:
        _output_names(manifest, p)
    from .disclosure import RunCheck
    # every party's program is the one built and discloses only what it reveals: unless
    # remembered, checked while the parties start, and none runs an op before it passes
    pending = RunCheck(directory, label=str(directory))
    if args.tls is not None:
        from .tls import contexts
        for p in parties:
            contexts(args.tls, p)
    debug = getattr(args, "debug", False)

    tmp = None
    if args.output:
        outroot = Path(args.output).resolve()
        outroot.mkdir(parents=True, exist_ok=True)
        for n, p in manifest["outputs"].items():   # a stale file must not pass for a result
            stale = outroot / p / f"{n}.npy"
            if stale.is_file() or stale.is_symlink():
                stale.unlink()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="mixc-run-")
        outroot = Path(tmp.name)
    try:
        children = _start_children(args, manifest, given, session, outroot, debug,
                                   pending if pending.needed else None)
        failures = [c for c in children.values()
                    if c.failed_at is not None or (c.proc.returncode != 0 and not c.killed)]
        if failures:
            failures.sort(key=lambda c: c.failed_at or float("inf"))
            root = next((c for c in failures if c.error and c.error[0] == "root"), None)
            root = root or next((c for c in failures if c.error is None), None) or failures[0]
            raise MixcError(f"{root.party}: {_child_message(root)}")
        for n, p in manifest["outputs"].items():
            path = outroot / p / f"{n}.npy"
            if args.output:
                print(f"{p}: wrote {path}")
            else:
                _print_output(n, p, np.load(path, allow_pickle=False))
        print(f"audit: mixc audit {directory}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def _start_children(args, manifest, given, session, outroot, debug, pending=None):
    """Run one child process per party until all finished or one failed; -> children.
    ``pending``: the bundle's RunCheck, run here while the children start and connect;
    each waits for its verdict before its first op (none comes if the check fails)."""
    from .bundle import input_party
    from .runtime.links import listen
    parties = list(manifest["parties"])
    # bound here, before any party starts, so no party's outgoing connection
    # can take a port another party has yet to listen on
    listeners = {p: listen(p, "127.0.0.1", 0) for p in parties}
    peers = ",".join(f"{p}=127.0.0.1:{s.getsockname()[1]}" for p, s in listeners.items())
    bundle_dir = str(Path(args.bundle).resolve())
    children = {}
    status = _StatusLine(args.progress)
    verdicts = {}  # party -> the write end of its verdict pipe
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        for p in parties:
            cmd = [sys.executable, "-m", "mixc", "run", bundle_dir, "--party", p, "--peers", peers,
                   "--timeout", repr(args.timeout), "--session", session,
                   "--output", str(outroot / p), "--report",
                   "--listen-fd", str(listeners[p].fileno())]
            for n, f in given.items():
                if input_party(manifest, n) == p:
                    cmd += ["--input", f"{n}={Path(f).resolve()}"]
            if args.tls is not None:
                cmd += ["--tls", str(Path(args.tls).resolve())]
            if debug:
                cmd.append("--debug")
            pass_fds = [listeners[p].fileno()]
            if pending is not None:
                read_end, verdicts[p] = os.pipe()
                cmd += ["--verdict-fd", str(read_end)]
                pass_fds.append(read_end)
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, errors="replace",
                                        start_new_session=True, pass_fds=pass_fds)
            finally:
                if pending is not None:
                    os.close(read_end)
            listeners.pop(p).close()
            child = children[p] = _Child(p, proc)
            child.reader = threading.Thread(target=_read_child, args=(child, debug), daemon=True,
                                            name=f"mixc-local-{p}")
            child.reader.start()
        if pending is not None:
            _check_and_hand_over(pending, verdicts)
        _close_all(verdicts)  # a child still waiting sees EOF: refused, it runs nothing
        _supervise(children, status)
    finally:
        _close_all(verdicts)
        for listener in listeners.values():   # of parties never started
            listener.close()
        status.clear()
        for c in children.values():
            _stop(c)
        for c in children.values():
            c.reader.join(2.0)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return children


@collector_paused()  # 10^5 IR objects made and pickled: no collector rescans them
def _check_and_hand_over(pending, verdicts):
    """Run the bundle check; each child gets its program as soon as the compiler has made
    it (pickled by a forked helper while this process compares and checks: pickling holds
    the GIL, so a thread would not overlap), then ``ok`` once the check passed
    (``_await_verdict``). A failed check sends no ``ok``: the child runs nothing."""
    helper = []
    try:
        pending.run(derived=lambda programs: helper.append(_fork_sender(programs, verdicts)))
    finally:
        handed = helper and os.waitstatus_to_exitcode(os.waitpid(helper[0], 0)[1]) == 0
    if not handed:
        raise MixcError("could not hand the checked programs to the parties")
    for p in list(verdicts):
        try:
            with os.fdopen(verdicts.pop(p), "wb", buffering=0) as f:
                f.write(b"ok\n")
        except BrokenPipeError:
            pass  # that child already failed: _supervise reports why


def _fork_sender(programs, verdicts):
    """A child process writing each party's program, pickled, into its verdict pipe;
    -> its pid. It only pickles and writes (no lock another thread may hold), then exits
    without running this process's exit handlers."""
    pid = os.fork()
    if pid:
        return pid
    status = 0
    try:
        for p, fd in verdicts.items():
            try:
                with os.fdopen(fd, "wb", closefd=False) as f:
                    pickle.dump(programs[p], f, protocol=pickle.HIGHEST_PROTOCOL)
            except BrokenPipeError:
                pass  # that child already failed: the parent's _supervise reports why
    except BaseException:  # noqa: BLE001 - reported by the exit status
        status = 1
    os._exit(status)


def _close_all(fds):
    for fd in fds.values():
        os.close(fd)
    fds.clear()


def _terminated(signum, frame):
    raise MixcError("terminated (SIGTERM); stopped every party")


def _read_child(child, debug):
    for line in child.proc.stderr:
        line = line.rstrip("\n")
        if line.startswith(_REPORT):
            kind, _, rest = line[len(_REPORT):].partition(" ")
            if kind == "progress":
                try:
                    done, total = (int(x) for x in rest.split())
                    child.progress = (done, total)
                except ValueError:
                    pass
            elif kind == "error":
                ekind, _, message = rest.partition(" ")
                if child.error is None:
                    child.error = (ekind, message)
                if child.failed_at is None:
                    child.failed_at = time.monotonic()
            continue
        if line.startswith(f"{PROG}: error: "):
            child.error_line = line[len(f"{PROG}: error: "):]
        elif line.strip():
            child.tail.append(line)
        if debug:
            sys.stderr.write(f"[{child.party}] {line}\n")


def _supervise(children, status, grace=1.5):
    """Wait for every child; once one fails, give the others ``grace`` s, then stop them."""
    first_failure = None
    while True:
        now = time.monotonic()
        running = 0
        for c in children.values():
            rc = c.proc.poll()
            if rc is None:
                running += 1
            elif rc != 0 and c.failed_at is None:
                c.failed_at = now
            if c.failed_at is not None and first_failure is None:
                first_failure = now
        if not running:
            return
        if first_failure is not None and now - first_failure > grace:
            return
        parts = [f"{c.party} {c.progress[0]}/{c.progress[1]}" if c.progress else f"{c.party} -"
                 for c in children.values()]
        status.show("[" + "] [".join(parts) + "] ops")
        time.sleep(0.05)


def _stop(child):
    proc = child.proc
    if proc.poll() is not None:
        return
    child.killed = True
    try:
        proc.terminate()
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


def _child_message(child):
    if child.error is not None:
        return child.error[1]
    if child.error_line:
        return child.error_line
    rc = child.proc.returncode
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        what = f"killed by {name}"
    else:
        what = f"exited with status {rc}"
    last = child.tail[-1] if child.tail else ""
    return f"{what}" + (f" ({last.strip()})" if last else "")
