"""The executor's OT ops: dealer-free correlations between the two parties of an MPC
device (``offline: he``; lowered by ``mixc.protocols.dealerfree``).

``ot.session`` opens this party's :class:`runtime.ot.OTSession` with the peer (the base
OTs run at once, so they land in the program's offline part) and keeps it on the
executor; its result is a one-byte token that every later ot op of the pair takes as
its first operand. Both parties run the matching ops in the same order, which the
session's own tag counter relies on (``seq`` numbers the calls; a call never runs twice,
and one inside a loop body runs once per iteration). A call inside a loop body takes
its tags from a window of its own: static tags ``LOOP_TAGS + seq * 2^8`` offset by the
iteration as the executor offsets every tag in a loop, so a loop of any length neither
exhausts the session's tags nor reuses one; its OT extension keystreams go on where the
previous call stopped (never reused), and its random choices come from the session's
private PRG, so every iteration's correlations are fresh.

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
from . import kernels
from .kernels import U128, Prg


# Static tags of OT calls inside loop bodies: call ``seq`` owns [LOOP_TAGS + seq * span,
# + span), span = ot.CALL_TAG_SPAN, above every tag a program numbers itself (those count
# up from 1 per pair of parties); the executor offsets them per iteration like any tag
# (+ (iteration + 1) * 2^32). Their low 32 bits, at least 2^31, set them apart from the
# iterations' ordinary tags (below 2^31) and the session's own (2^48 + s * 2^40 + < 2^20).
LOOP_TAGS = 1 << 31


def _sessions(ex):
    return ex.__dict__.setdefault("_ot_sessions", {})


def run(ex, node, args):
    from . import ot
    op, a = node.op, node.attrs
    sessions = _sessions(ex)
    peer = a["peer"]
    if op == "ot.session":
        if peer in sessions:
            raise MixcError(f"party {ex.party!r} opens a second OT session with {peer!r}")
        # the link's session (a TCP run's session id) goes into every OT's hash tweak
        session_id = str(getattr(ex.link, "session", None) or "").encode()
        s = ot.OTSession(ex.link, peer, bool(a["base_sender"]), Prg(os.urandom(32), 0),
                         int(a["tag_base"]), session_id=session_id)
        s._setup()  # base OTs now: at session start, before any input is read
        sessions[peer] = (s, {})
        return [np.zeros(1, dtype=np.uint8)]
    if peer not in sessions:
        raise MixcError(f"{op}: party {ex.party!r} has no OT session with {peer!r}")
    s, last_run = sessions[peer]
    seq = int(a["seq"])
    iteration = -1 if ex._iteration is None else ex._iteration[0]
    # a call runs once per iteration of its loop, whose flat numbers only grow
    if seq in last_run and iteration <= last_run[seq]:
        raise MixcError(f"{op}: OT call #{seq} with {peer!r} runs twice"
                        + ("" if iteration < 0 else f" in loop iteration {iteration}"))
    last_run[seq] = iteration
    if ex._iteration is None:
        return _call(s, op, a, args)
    static = LOOP_TAGS + seq * ot.CALL_TAG_SPAN
    if static >= 1 << 32:
        raise MixcError(f"{node.loc or op}: OT call #{seq} inside a loop: at most "
                        f"{((1 << 32) - LOOP_TAGS) // ot.CALL_TAG_SPAN} OT calls per program")
    with s.tags_from(ex._per_iteration(static, node)):
        return _call(s, op, a, args)


def _call(s, op, a, args):
    ring = {"ring": a["ring"]} if "ring" in a else {}  # the 64-bit ring is the default
    if op in ("ot.arith_triple", "ot.and_triple"):
        shape = tuple(a["shape"])
        n = int(np.prod(shape, dtype=np.int64))
        triples = s.arith_triples(n, **ring) if op == "ot.arith_triple" else s.and_triples(n)
        return [t.reshape(shape) for t in triples]
    x = args[1] if args[1].dtype == U128 else np.ascontiguousarray(args[1], dtype=np.uint64)
    send = a["role"] == "send"
    if op == "ot.ole":
        out = s.ole_send(x) if send else s.ole_recv(x)
    elif op == "ot.bit_ole":
        out = s.bit_ole_send(x, **ring) if send else s.bit_ole_recv(x, **ring)
    elif op == "ot.and":
        out = s.and_send(x) if send else s.and_recv(x)
    else:
        raise MixcError(f"unknown OT op {op}")
    return [out.reshape(x.shape)]


def trunc_wrap_finish128(a, u, e, g, r, t):
    """``trunc_wrap_finish`` on the 128-bit ring (mixc.protocols.dealerfree.truncate): u is
    u128 (x0 + 2^126 at the first party, -x1 at the other); e, g, r, t are u64 words. The
    borrow w = w0 + w1 enters as w * 2^(128 - f), which only needs w mod 2^f, so its
    shares stay mod 2^64 (f <= 64) and go straight into the high word."""
    f = int(a["bits"])
    one, two = np.uint64(1), np.uint64(2)
    s = (one - two * e) * (one - two * g)
    if a["first"]:
        w = e * g + g * (one - two * e) * r + s * t
        base = kernels.r128_sub(kernels.r128_lrshift(u, f), 1 << (126 - f))
    else:
        w = e * (one - two * g) * r + s * t
        base = kernels.r128_neg(kernels.r128_lrshift(u, f))
    base["hi"] += np.left_shift(w, np.uint64(64 - f))
    return base
