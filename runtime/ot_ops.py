"""The executor's OT ops: dealer-free correlations between the two parties of an MPC
device (``offline: he``; lowered by ``mixc.protocols.dealerfree``).

``ot.session`` opens this party's :class:`runtime.ot.OTSession` with the peer (the base
OTs run at once, so they land in the program's offline part) and keeps it on the
executor; its result is a one-byte token that every later ot op of the pair takes as
its first operand. Both parties run the matching ops in the same order, which the
session's own tag counter relies on (``seq`` numbers the calls; a call never runs twice).

- ``ot.ole`` (role send: ``ole_send``, recv: ``ole_recv``), ``ot.bit_ole``
  (``bit_ole_send``/``bit_ole_recv``), ``ot.and`` (``and_send``/``and_recv``):
  my share of the elementwise product of my operand and the peer's;
- ``ot.arith_triple``, ``ot.and_triple``: random triples (``arith_triples``,
  ``and_triples``), reshaped to the op's ``shape``.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import MixcError
from .kernels import Prg


def _sessions(ex):
    return ex.__dict__.setdefault("_ot_sessions", {})


def run(ex, op, a, args):
    from . import ot
    sessions = _sessions(ex)
    peer = a["peer"]
    if op == "ot.session":
        if peer in sessions:
            raise MixcError(f"party {ex.party!r} opens a second OT session with {peer!r}")
        s = ot.OTSession(ex.link, peer, bool(a["base_sender"]), Prg(os.urandom(32), 0),
                         int(a["tag_base"]))
        s._setup()  # base OTs now: at session start, before any input is read
        sessions[peer] = (s, set())
        return [np.zeros(1, dtype=np.uint8)]
    if peer not in sessions:
        raise MixcError(f"{op}: party {ex.party!r} has no OT session with {peer!r}")
    s, done = sessions[peer]
    seq = int(a["seq"])
    if seq in done:
        raise MixcError(f"{op}: OT call #{seq} with {peer!r} runs twice")
    done.add(seq)
    if op in ("ot.arith_triple", "ot.and_triple"):
        shape = tuple(a["shape"])
        n = int(np.prod(shape, dtype=np.int64))
        triples = s.arith_triples(n) if op == "ot.arith_triple" else s.and_triples(n)
        return [np.asarray(t, dtype=np.uint64).reshape(shape) for t in triples]
    x = np.ascontiguousarray(args[1], dtype=np.uint64)
    send = a["role"] == "send"
    if op == "ot.ole":
        out = s.ole_send(x) if send else s.ole_recv(x)
    elif op == "ot.bit_ole":
        out = s.bit_ole_send(x) if send else s.bit_ole_recv(x)
    elif op == "ot.and":
        out = s.and_send(x) if send else s.and_recv(x)
    else:
        raise MixcError(f"unknown OT op {op}")
    return [np.asarray(out, dtype=np.uint64).reshape(x.shape)]
