"""The range sanitizer of ``simulate``: every party's shares, put back together.

``simulate`` runs every party's program in one process, so it can see what no
party may: the values the parties' shares stand for. With ``check_ranges`` (on by
default) each party runs a ``SanitizingExecutor``, which hands the pieces of the
values below to one ``RangeSanitizer`` as they are computed; once every piece of a
value has arrived, in the same loop iteration, it is reconstructed and checked
against the range of the global op it feeds:

- a fixed-point product (``mul``, ``dot_general``, convolution, division by a public
  value): below 2^(62 - 2f) before its truncation (TruncPr and the dealer-free
  truncation are exact for |x| < 2^62; beyond, the result wraps around);
- a comparison (``lt``, ``eq``): the difference below 2^(63 - f) (``bool2pc`` takes
  the msb of the difference);
- a plaintext shared into an MPC device: below 2^(63 - f), what encoding holds;
- an approximation's input: within its ``approx_range`` (``mixc.sanitize``).
- on an HE device (``type: HE``), a product of a ciphertext by a plaintext: below
  2^(63 - b) for the b fraction bits its result carries (the plaintext modulus is
  2^64). No party holds a ciphertext's value, so it is evaluated here from the
  plaintexts it was computed from (``_HeShadow``: the device's ops are linear).

The first violation per source line becomes a ``mixc.RangeWarning`` naming the
author's ``file:line``, the op, the magnitude seen and the limit, issued when the
run ends (also when it fails).

Which local values are the pieces of which global value is what lowering recorded
(``LowerContext.parts``, kept on the lowered module by the build; a bundle loaded
from a directory has its global IR lowered again by the same passes), matched node
by node with the party programs that run (``partition.split`` renumbers values).
A piece that ``hoist_invariants`` moved in front of its loop is watched through the
loop argument that captures it, or, if the body no longer reads it, taken once for
every iteration. Party threads run concurrently: a value is reconstructed when the
last of its pieces arrives, and a check runs when the last of its operands does.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

from ..errors import MixcError
from ..ir.core import collector_paused, walk
from ..ir.ops import OPS
from ..ir.ops import U128
from ..sanitize import (approximation_limit, comparison_bits, encoding_bits,
                        outside_approximation, truncation_bits, warn_at)
from . import kernels
from .executor import PartyExecutor

_PRODUCTS = ("mul", "dot_general", "conv_general_dilated", "div")
_SHARED_KINDS = ("arith", "bool")


class Check:
    """One global node's range condition on its operands' reconstructed values."""

    def __init__(self, index, node, operands, test, what=None):
        self.index, self.node, self.operands = index, node, tuple(operands)
        self.test = test  # operand values -> None, or what is out of range
        self.what = what or node.op  # the op a warning names


def _fraction_bits(device, dtype):
    return device.fraction_bits if device.kind in ("MPC", "HE") and dtype == "f32" else 0


def _product_check(node, f, ring):
    bits = truncation_bits(ring) - 2 * f
    return _exact_product_test(node, bits, lambda values: values, lambda seen: (
        f"a product of magnitude {seen:.4g} before truncation, at or beyond "
        f"2^{bits} = {2.0 ** bits:.4g} ({f} fraction bits, {ring}-bit ring): the result "
        "wraps around"))


def _exact_product_test(node, bits, operand_values, message):
    """A test: the exact product of the operands (from ``operand_values``) below 2^bits,
    else ``message(magnitude seen)``."""
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}
    limit = 2.0 ** bits

    def test(values):
        a, b = operand_values(values)
        exact = a / b if node.op == "div" else OPS[node.op].impl(attrs, a, b)
        seen = float(np.max(np.abs(exact), initial=0.0))
        return None if seen < limit else message(seen)
    return test


def _comparison_check(f, ring):
    bits = comparison_bits(ring) - f
    limit = 2.0 ** bits

    def test(values):
        a, b = values
        seen = float(np.max(np.abs(a - b), initial=0.0))
        if seen < limit:
            return None
        return (f"operands {seen:.4g} apart, at or beyond 2^{bits} = {limit:.4g} "
                f"({f} fraction bits, {ring}-bit ring): the comparison is wrong")
    return test


def _encoding_check(f, ring):
    bits = encoding_bits(ring) - f
    limit = 2.0 ** bits

    def test(values):
        (x,) = values
        finite = np.isfinite(x).all()
        seen = float(np.max(np.abs(x), initial=0.0)) if finite else float("inf")
        if seen < limit:
            return None
        return (f"a value of magnitude {seen:.4g} shared, at or beyond 2^{bits} = "
                f"{limit:.4g} ({f} fraction bits, {ring}-bit ring): fixed point cannot "
                "encode it")
    return test


def _approximation_check(name, lo, hi):
    def test(values):
        (x,) = values
        outside = outside_approximation(name, x, lo, hi)
        if not outside.any():
            return None
        bad = x[outside]
        seen = float(bad[np.argmax(np.abs(bad))] if (np.abs(bad) > hi).any()
                     else bad[np.argmin(np.abs(bad))])
        return (f"input {seen:.4g} outside the approximation's range "
                f"{approximation_limit(name, lo, hi)}: the result is saturated or off its "
                "stated error")
    return test


def _check_of(index, node, module, he):
    """The Check of global ``node``, or None if its op has no range condition there
    (``he``: the ``_HeLowering`` of a module with HE devices, else None)."""
    if not node.results:
        return None
    device = module.devices.get(node.results[0].type.place)
    if device is not None and device.kind == "HE":
        return _he_product_check(index, node, he)
    if device is None or device.kind != "MPC":
        return None
    result, ring = node.results[0].type, device.ring or 64
    if node.op in _PRODUCTS and result.kind == "arith" and result.dtype == "f32":
        return Check(index, node, node.operands,
                     _product_check(node, device.fraction_bits, ring))
    if node.op in ("lt", "eq") and result.kind == "bool":
        a, b = node.operands
        return Check(index, node, (a, b),
                     _comparison_check(_fraction_bits(device, a.type.dtype), ring))
    if node.op == "to" and result.kind in _SHARED_KINDS and result.dtype == "f32":
        return Check(index, node, node.operands, _encoding_check(device.fraction_bits, ring))
    if node.op == "reshape" and "approx_range" in node.attrs:
        name, lo, hi = node.attrs["approx_range"]
        return Check(index, node, node.operands, _approximation_check(name, lo, hi), name)
    return None


_HE_PLAINTEXT_BITS = 64   # the HE devices' plaintext modulus t = 2^64 (protocols/he.py)


def _he_product_check(index, node, he):
    """The Check of a product on an HE device whose result is a ciphertext: the exact
    product below 2^(63 - b), b the fraction bits the lowering gave its result. Its
    ciphertext operand is evaluated from the plaintexts it was computed from; a product
    whose ciphertext comes from a loop's carry (no plaintext to start from) is not checked."""
    if node.op not in _PRODUCTS or node.results[0].type.kind != "he" or he is None:
        return None
    frac = he.fracs.get(node.results[0])
    shadow = he.shadow(node.operands)
    if frac is None or shadow is None:
        return None
    bits = _HE_PLAINTEXT_BITS - 1 - frac
    test = _exact_product_test(node, bits, shadow.evaluate, lambda seen: (
        f"a ciphertext product of magnitude {seen:.4g}, at or beyond 2^{bits} = "
        f"{2.0 ** bits:.4g} ({frac} fraction bits on HE device {node.results[0].type.place!r}, "
        "plaintext modulus 2^64): the result wraps around"))
    return Check(index, node, shadow.leaves, test)


class _HeShadow:
    """Ciphertext operands as functions of plaintext values: the HE device's ops from the
    values that are not ciphertexts (the owner's data before encryption, the evaluator's
    plaintext, constants, other devices' values), replayed in float64 by the ops' impls."""

    def __init__(self, module):
        self.made_by = {r: n for n in walk(module.nodes) for r in n.results}

    def __call__(self, operands):
        order, leaves, seen = [], [], set()

        def visit(v):
            if v in seen:
                return True
            seen.add(v)
            if v.type.kind != "he":
                leaves.append(v)
                return True
            n = self.made_by.get(v)
            if n is None or n.body is not None or n.op not in OPS or \
                    (n.op != "to" and OPS[n.op].impl is None):
                return False  # a loop's carry or result, or an op with no impl
            if not all(visit(u) for u in n.operands):
                return False
            order.append(n)
            return True
        if not all(visit(v) for v in operands):
            return None
        return _Replay(tuple(operands), tuple(leaves), order)


class _Replay:
    """The ops making ``operands`` from ``leaves``, in order."""

    def __init__(self, operands, leaves, order):
        self.operands, self.leaves, self.order = operands, leaves, order

    def evaluate(self, leaf_values):
        env = dict(zip(self.leaves, leaf_values))
        for n in self.order:
            ins = [env[u] for u in n.operands]
            attrs = {k: v for k, v in n.attrs.items() if k != "protocol"}
            out = ins[0] if n.op == "to" else OPS[n.op].impl(attrs, *ins)
            env[n.results[0]] = np.asarray(out, np.float64)
        return [env[v] for v in self.operands]


class _HeLowering:
    """The fraction bits the lowering gave each HE-device value, and its shadows."""

    def __init__(self, module, ctx):
        self.fracs = {g: c.frac for g, c in ctx.__dict__.get("_he_values", {}).items()}
        self.shadow = _HeShadow(module)


def _lowering(bundle):
    """(global IR after ``select_protocols``, global value -> its local pieces, the
    partitioned module, ``_HeLowering`` or None) the bundle's programs were split from:
    kept by the build, or, for a bundle loaded from a directory or one with an HE device
    (whose values' fraction bits only the lowering's context knows), its global IR lowered
    again by the same passes."""
    from ..passes import PIPELINE
    from ..passes.lower import lowered
    kept = getattr(bundle.stages, "module", lambda name: None)
    module, lowered_module = getattr(bundle, "graph_module", None), kept("lower")
    he_device = module is not None and any(d.kind == "HE" for d in module.devices.values())
    if module is not None and module.stage == "select_protocols" and not he_device \
            and hasattr(lowered_module, "parts") and kept("partition") is not None:
        return module, lowered_module.parts, kept("partition"), None
    if "select_protocols" not in bundle.stages:
        raise MixcError("checking ranges needs the bundle's global IR after select_protocols "
                        "(after/select_protocols.mir); rebuild it, or pass check_ranges=False")
    from ..ir.parser import parse_module
    module = parse_module(bundle.stages["select_protocols"], filename="select_protocols.mir")
    ctx = lowered(module)
    names = [name for name, _ in PIPELINE]
    partitioned = ctx.out
    for _, run in PIPELINE[names.index("lower") + 1:]:
        partitioned = run(partitioned)
    he = _HeLowering(module, ctx) if any(d.kind == "HE" for d in module.devices.values()) \
        else None
    return module, ctx.parts, partitioned, he


class _Places:
    """Where the values of a partitioned module live: the loop whose body defines each
    (None: the top level), each loop's enclosing loop, and the body argument through which
    a loop reads each value it captures."""

    def __init__(self, partitioned):
        self.owner, self.parent, self.capture, self.made_by = {}, {}, {}, {}
        self._visit(partitioned.nodes, None)

    def _visit(self, nodes, loop):
        for n in nodes:
            self.owner.update((r, loop) for r in n.results)
            if n.body is None:
                continue
            self.parent[n] = loop
            self.made_by.update((r, n) for r in n.results)
            self.owner.update((a, n) for a in n.body.args)
            captures = n.attrs["captures"]
            self.capture.update(((n, u), a) for u, a in zip(n.operands[:captures],
                                                           n.body.args[:captures]))
            self._visit(n.body.nodes, n)

    def seen_in(self, value, loop):
        """``value`` as the body of ``loop`` reads it: itself, or, where a pass moved its
        computation out of the loop (``hoist_invariants``), the argument capturing it
        (``value`` itself if the body does not read it)."""
        chain, at = [], loop
        while at is not None and at is not self.owner.get(value):
            chain.append(at)
            at = self.parent.get(at)
        if at is not self.owner.get(value):
            return value
        seen = value
        for inner in reversed(chain):
            seen = self.capture.get((inner, seen))
            if seen is None:
                return value
        return seen


def _global_loops(module):
    """(global value -> the global loop whose body defines it (None: the top level),
    a loop body's captured argument -> the value outside that it stands for)."""
    owner, captured = {}, {}

    def visit(nodes, loop):
        for n in nodes:
            owner.update((r, loop) for r in n.results)
            if n.body is not None:
                owner.update((a, n) for a in n.body.args)
                captures = n.attrs["captures"]
                captured.update(zip(n.body.args[:captures], n.operands[:captures]))
                visit(n.body.nodes, n)
    visit(module.nodes, None)
    return owner, captured


def _observable_pieces(g, parts, places, captured):
    """The local pieces that show global value ``g`` at run time: its own, or, for a
    captured loop argument whose pieces a pass removed (every use hoisted out of the body,
    ``hoist_invariants``), those of the value outside it stands for; None if none do."""
    while True:
        pieces = parts.get(g)
        if pieces is not None:
            # replicated shares: party i holds (x_i, x_{i+1}); the first components add up
            pieces = {p: v[0] if isinstance(v, tuple) else v for p, v in pieces.items()}
        if pieces is not None and all(v in places.owner for v in pieces.values()):
            return pieces
        if g not in captured:
            return None
        g = captured[g]


def _matched_values(mine, running, party):
    """{value of ``mine``: the same value in ``running``}: two programs that differ only in
    value numbering (``partition.split`` renumbers)."""
    pairs = {}
    ours, theirs = list(walk(mine.nodes)), list(walk(running.nodes))
    if len(ours) != len(theirs):
        raise MixcError(f"checking ranges: the program of party {party!r} is not the one "
                        "its bundle's global IR lowers to; rebuild the bundle")
    for a, b in zip(ours, theirs):
        if a.op != b.op or len(a.results) != len(b.results):
            raise MixcError(f"checking ranges: the program of party {party!r} differs from "
                            f"its global IR's lowering at {a.op} ({a.loc}); rebuild the bundle")
        pairs.update(zip(a.results, b.results))
        if a.body is not None:
            pairs.update(zip(a.body.args, b.body.args))
    return pairs


class _Plan:
    """What a bundle's range checks read, made once per bundle (kept on the bundle):
    the checks, and which local values of which party are the pieces of their operands."""

    @collector_paused()
    def __init__(self, bundle):
        from ..passes import partition
        module, parts, partitioned, he = _lowering(bundle)
        renamed = {}
        for party in bundle.parties:
            renamed.update(_matched_values(partition.project(partitioned, party),
                                           bundle.programs[party], party))
        places = _Places(partitioned)
        global_loops, captured = _global_loops(module)
        self.checks = {}     # global value -> the checks reading it
        self.holders = {}    # global value -> the parties whose pieces make it
        self.outside = {}    # global value -> holders whose piece a loop's body does not
        #                      compute (hoisted in front of it): one piece for every iteration
        self.invariant = set()  # global values all of whose pieces are outside
        self.decode = {}     # global value -> (kind, dtype, shape, fraction bits)
        self.watched = {p: {} for p in bundle.parties}  # party -> {local value: [global]}
        for index, node in enumerate(walk(module.nodes)):
            check = _check_of(index, node, module, he)
            if check is None:
                continue
            shown = {g: _observable_pieces(g, parts, places, captured) for g in check.operands}
            if any(pieces is None for pieces in shown.values()):
                continue
            loop = _local_loop(global_loops.get(node.results[0]), parts, places)
            seen = {v: places.seen_in(v, loop) for pieces in shown.values()
                    for v in pieces.values()}
            outside = {v for v, s in seen.items()
                       if loop is not None and places.owner.get(s) is not loop}
            self._watch(check, module, shown, {v: renamed[s] for v, s in seen.items()},
                        outside)

    def _watch(self, check, module, shown, watched_as, outside):
        for g in check.operands:
            self.checks.setdefault(g, []).append(check)
            if g in self.holders:
                continue
            pieces = shown[g]
            holders = sorted(pieces) if g.type.kind in _SHARED_KINDS else sorted(pieces)[:1]
            self.holders[g] = holders
            self.outside[g] = {p for p in holders if pieces[p] in outside}
            if len(self.outside[g]) == len(holders):
                self.invariant.add(g)
            device = module.devices[g.type.place]
            self.decode[g] = (g.type.kind, g.type.dtype, tuple(g.type.shape),
                              _fraction_bits(device, g.type.dtype))
            for party in holders:
                self.watched[party].setdefault(watched_as[pieces[party]], []).append(g)


# Parties run at most an iteration or so apart (in-process links hold a sender back), so
# pieces still waiting for their peers' after this many newer iterations never match
# (their peer's piece is computed outside the loop): drop them.
_PENDING_ITERATIONS = 4


class RangeSanitizer:
    """One run's checks: collects the parties' pieces of the checked values, runs the
    checks as their operands complete, and keeps the first violation per source line.

    The parties only queue their pieces (``arrive``); one checker thread reconstructs
    and checks, so a party does not wait for it between two messages (a many-round
    protocol waits on every party's per-op work)."""

    def __init__(self, bundle):
        plan = bundle.__dict__.get("_range_plan")
        if plan is None:
            plan = bundle.__dict__["_range_plan"] = _Plan(bundle)
        self.plan, self.watched = plan, plan.watched
        self._queue = queue.SimpleQueue()
        self._checker, self._start = None, threading.Lock()
        self._failure = None  # what stopped the checker thread, raised by ``warn``
        self._pieces = {}    # global value -> {iteration: {party: piece}}
        self._outside = {}   # (global value, party) -> its piece for every iteration
        self._invariant = {}  # global value of plan.invariant -> reconstructed
        self._values = {}    # check -> {iteration: {global value: reconstructed}}
        self._found = {}     # loc -> ((iteration, index), message): the first violation

    def executor(self, program, party, link, inputs):
        """The executor of ``party`` under this sanitizer (``simulate`` makes one each)."""
        return SanitizingExecutor(program, party, link, inputs, self)

    def arrive(self, g, party, iteration, piece):
        """``party``'s piece of global value ``g`` in ``iteration`` (for a piece computed
        outside the loop of ``g``'s op: the piece of every iteration)."""
        if self._checker is None:
            with self._start:
                if self._checker is None:
                    self._checker = threading.Thread(target=self._check_all, daemon=True,
                                                     name="mixc-range-checks")
                    self._checker.start()
        self._queue.put((g, party, iteration, piece))

    def _check_all(self):
        try:
            for item in iter(self._queue.get, None):
                self._take(*item)
        except BaseException as e:  # noqa: BLE001 - raised again by warn(), in simulate
            self._failure = e

    def _take(self, g, party, iteration, piece):
        plan = self.plan
        key = iteration[0] if iteration else -1
        if party in plan.outside[g]:
            self._outside[(g, party)] = piece
            if g not in plan.invariant:
                return
            got = {p: self._outside.get((g, p)) for p in plan.holders[g]}
        else:
            got = _pending(self._pieces, g, key)
            got[party] = piece
            if len(got) < len(plan.holders[g]) - len(plan.outside[g]):
                return
            del self._pieces[g][key]
            got.update({p: self._outside.get((g, p)) for p in plan.outside[g]})
        if any(v is None for v in got.values()):
            return
        value = _reconstruct(plan.decode[g], [got[p] for p in plan.holders[g]])
        if value is None:
            return
        if g in plan.invariant:
            self._invariant[g] = value
        for check in plan.checks[g]:
            self._operand_ready(check, g, value, key, iteration)

    def _operand_ready(self, check, g, value, key, iteration):
        """Run ``check`` once all its operands of this iteration (and the invariant ones)
        are known."""
        varying = [v for v in set(check.operands) if v not in self.plan.invariant]
        values = {}
        if varying:
            if g in self.plan.invariant:
                return  # the check runs when its varying operands arrive
            values = _pending(self._values, check, key)
            values[g] = value
            if len(values) < len(varying):
                return
            del self._values[check][key]
        args = [values[v] if v in values else self._invariant.get(v) for v in check.operands]
        if any(a is None for a in args):
            return
        broken = check.test(args)
        if broken is not None:
            self._record(check, iteration, broken)

    def _record(self, check, iteration, what):
        loc = check.node.loc
        when = (iteration[0], check.index) if iteration else (-1, check.index)
        where = f" (loop iteration {iteration[1]})" if iteration else ""
        first = self._found.get(loc)
        if first is None or when < first[0]:
            self._found[loc] = (when, f"{check.what}: {what}{where}")

    def warn(self):
        """After the run: finish the checks, then one RangeWarning per source line, in
        program order."""
        if self._checker is not None:
            self._queue.put(None)
            self._checker.join()
        if self._failure is not None:
            raise self._failure
        for loc, (_, message) in sorted(self._found.items(), key=lambda kv: kv[1][0]):
            warn_at(loc, message)


def _pending(table, owner, iteration):
    """``table[owner][iteration]``, made if new; the oldest iteration of ``owner`` dropped
    beyond ``_PENDING_ITERATIONS``."""
    by_iteration = table.setdefault(owner, {})
    entry = by_iteration.get(iteration)
    if entry is None:
        entry = by_iteration[iteration] = {}
        if len(by_iteration) > _PENDING_ITERATIONS:
            del by_iteration[next(iter(by_iteration))]
    return entry


def _local_loop(global_loop, parts, places):
    """The loop of the partitioned module that global loop ``global_loop`` became (None
    for the top level, or a loop without results, which nothing tells apart)."""
    if global_loop is None:
        return None
    for r in global_loop.results:
        for piece in parts.get(r, {}).values():
            for v in piece if isinstance(piece, tuple) else (piece,):
                if v in places.made_by:
                    return places.made_by[v]
    return None


def _reconstruct(how, pieces):
    """The value the pieces stand for, as float64 (None for a representation not known):
    a sum of arithmetic shares, an XOR of boolean ones, one copy of a public value; ring
    elements of 64 or 128 bits (``U128``) read as signed fixed point."""
    kind, dtype, shape, f = how
    words = [np.asarray(p) for p in pieces]
    if kind not in _SHARED_KINDS:
        total = words[0]
    elif any(w.dtype != words[0].dtype or w.dtype not in (np.uint64, U128) for w in words):
        return None
    else:
        total = _combined(words, kind)
    if kind == "bool" and dtype == "bool":  # 0/1 values packed 64 to a word
        n = int(np.prod(shape, dtype=np.int64))
        return kernels.bits_unpack(np.ascontiguousarray(total).reshape(-1), n) \
            .reshape(shape).astype(np.float64)
    if total.dtype == U128:
        return kernels.r128_decode(total, f)
    if total.dtype == np.uint64:
        return total.view(np.int64) / 2.0 ** f
    return total.astype(np.float64)


def _combined(words, kind):
    """The ring element that shares ``words`` make: their sum (arith) or XOR (bool)."""
    total = words[0]
    for w in words[1:]:
        if total.dtype == U128:
            total = kernels.r128_add(total, w) if kind == "arith" else \
                kernels.r128_from_words(kernels.r128_words(total) ^ kernels.r128_words(w))
        else:
            total = total + w if kind == "arith" else total ^ w
    return total


class SanitizingExecutor(PartyExecutor):
    """A party's executor that hands the sanitizer its pieces of the checked values as they
    are stored (``_WatchedValues``): pure ops still run inline, unwatched."""

    def __init__(self, program, party, link, inputs, sanitizer):
        super().__init__(program, party, link, inputs)
        self.sanitizer = sanitizer
        self.watched = sanitizer.watched[party]

    def _steps(self, plan, env, outputs, checkpoint=None, progress=None):
        return super()._steps(plan, _WatchedValues(self, env), outputs, checkpoint, progress)


class _WatchedValues(dict):
    """A block's values (``env`` of ``PartyExecutor._steps``) that reports the watched ones,
    a loop body's arguments included, to the sanitizer with the iteration they belong to."""

    def __init__(self, executor, values):
        super().__init__(values)
        self.executor = executor
        for v, value in values.items():
            self._report(v, value)

    def __setitem__(self, v, value):
        super().__setitem__(v, value)
        if v in self.executor.watched:
            self._report(v, value)

    def _report(self, v, value):
        ex = self.executor
        for g in ex.watched.get(v, ()):
            ex.sanitizer.arrive(g, ex.party, ex._iteration, value)
