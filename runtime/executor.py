"""The party executor: runs one party's program over a link.

The same executor runs under ``simulate`` (in-process links, one thread per
party) and under ``mixc run`` (TCP links, one process per party). Before the
first message it checks every input against the program's declared name,
shape and dtype. Pairwise PRG keys are never sent: the key ``"a~b"`` a program
uses is derived by both a and b from their link's X25519 key exchange, bound
to the fresh session (``Link.pair_key``, ``runtime/session_keys.py``); a key
named after one party is that party's own (``os.urandom``). Values are dropped
after their last use, so memory follows the live set, not the program length.

Debug hook, off by default: with ``MIXC_DEBUG_KEY_LOG=FILE`` in the
environment every executor appends its keys to FILE (``party seed hex`` lines;
the test that searches a recorded run's traffic for them uses it) -- never set
it in a real run.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..errors import InputError, MixcError, NumericError
from ..ir.core import collector_paused, walk
from ..ir.ops import NUMPY_DTYPES, OPS, impl_of
from . import kernels

KEY_LOG_ENV = "MIXC_DEBUG_KEY_LOG"
_ACCEPTED_KINDS = {"f32": "f", "i32": "iu", "bool": "b"}


def check_input(name, value, dtype, shape):
    """The input as the declared numpy dtype, or an InputError saying what is wrong."""
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - anything numpy cannot read is bad input
        raise InputError(f"input {name!r} is not an array: {e}") from None
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"input {name!r} has shape {tuple(arr.shape)}, the program declares "
                         f"{tuple(shape)}")
    if arr.dtype.kind not in _ACCEPTED_KINDS[dtype]:
        raise InputError(f"input {name!r} has dtype {arr.dtype}, the program declares {dtype}")
    return arr.astype(NUMPY_DTYPES[dtype], copy=False)


def encoded_inputs(program):
    """Input name -> (fraction bits, ring bits) of the fixed-point encoding a party's
    program applies to it as read (the narrowest range if it is encoded twice)."""
    names = {n.result: n.attrs["name"] for n in program.nodes if n.op == "input"}
    found = {}
    for n in program.nodes:
        if n.op == "encode" and n.operands[0] in names:
            name = names[n.operands[0]]
            spec = (n.attrs["frac_bits"], int(n.result.type.dtype[1:]))
            if name not in found or _limit(*spec) < _limit(*found[name]):
                found[name] = spec
    return found


def _limit(frac_bits, ring_bits):
    """The magnitude from which ``round(x * 2^frac_bits)`` no longer fits the ring."""
    return 2.0 ** (ring_bits - 1 - frac_bits)


def first_unencodable(values, frac_bits, ring_bits):
    """(index, value) of the first element that is NaN/inf or out of the fixed-point
    range (as ``kernels.encode_fixed`` decides), or None."""
    limit = 2.0 ** (ring_bits - 1)
    values = np.asarray(values)
    if values.size and values.dtype.kind in "fiub":
        # One pass in the input's own dtype settles the common case (a training set is
        # 10^7-10^8 values); NaN makes the peak NaN and takes the exact path below.
        peak = float(np.max(np.abs(values)))
        if peak * 2.0 ** frac_bits < limit / 2:
            return None
    x = np.asarray(values, dtype=np.float64)
    scaled = np.rint(x * 2.0 ** frac_bits)
    bad = ~((scaled >= -limit) & (scaled < limit))
    if not bad.any():
        return None
    index = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return tuple(int(i) for i in index), float(x[index])


def unencodable_why(index, value, frac_bits, ring_bits):
    """``value`` at ``index`` and why fixed point cannot hold it, for an error message."""
    at = f" at index [{', '.join(map(str, index))}]" if index else ""
    if np.isfinite(value):
        return (f"{value:g}{at}, outside the fixed-point range |x| < "
                f"2^{ring_bits - 1 - frac_bits} ({frac_bits} fraction bits)")
    return f"{value}{at}, which fixed point cannot encode"


def check_encodable(name, party, values, frac_bits, ring_bits):
    """InputError, naming input ``name`` of ``party`` and the first bad element, unless
    every value of it encodes in fixed point."""
    bad = first_unencodable(values, frac_bits, ring_bits)
    if bad is not None:
        raise InputError(f"input {name!r} of party {party!r} holds "
                         f"{unencodable_why(*bad, frac_bits, ring_bits)}")


_SPECIAL_KINDS = ("input", "dp_noise_op", "random", "send", "recv", "encode", "decode", "call_op",
                  "he", "he_mm", "ot", "bits_pack", "bits_unpack", "bits_unzip", "loop_op",
                  "loop_index_op")
_STATIC_LIMIT = 1 << 32  # tags and streams inside loops are offset by multiples of it
_KIND_OF_OP = {"dp_noise": "dp_noise_op", "call": "call_op", "output": "output",
               "loop": "loop_op", "yield": "yield", "loop_index": "loop_index_op"}
_KIND_OF_PREFIX = (("he.", "he"), ("he_mm.", "he_mm"), ("ot.", "ot"))


def _kind(op):
    """How the executor runs ``op``: a handler's name, "output", or None for OPS[op].impl
    (pure ops with one result)."""
    if op in _KIND_OF_OP:
        return _KIND_OF_OP[op]
    if op in _SPECIAL_KINDS:
        return op
    for prefix, kind in _KIND_OF_PREFIX:
        if op.startswith(prefix):
            return kind
    return None


def _plan_nodes(nodes):
    last_use = {}
    for i, n in enumerate(nodes):
        for v in n.operands:
            last_use[v] = i
    steps = []
    for i, n in enumerate(nodes):
        operands = tuple(n.operands)
        dead = tuple(v for j, v in enumerate(operands)
                     if last_use[v] == i and v not in operands[:j])
        kind = _kind(n.op)
        pure = impl_of(n) if kind is None and len(n.results) == 1 else None
        steps.append((n, kind, operands, tuple(n.results), dead, pure))
    return steps


def _plan(program):
    """Per node: (node, kind, operands, results, values last used there), computed once
    per program (and per loop body): the per-node work of the run loop is what a
    many-round protocol waits on."""
    cached = program.__dict__.get("_executor_plan")
    if cached is not None and len(cached) == len(program.nodes) and all(
            step[0] is n and step[2] == tuple(n.operands)
            for step, n in zip(cached, program.nodes)):
        return cached
    steps = _plan_nodes(program.nodes)
    program.__dict__["_executor_plan"] = steps
    return steps


def _at_op(exc, node):
    """``exc`` marked with the op it came from (innermost first): an abort tells the
    peers this much, and not the exception's text."""
    if node is not None and getattr(exc, "mixc_op", None) is None:
        try:
            exc.mixc_op = node.op + (f" at {node.loc}" if node.loc else "")
        except AttributeError:
            pass
    return exc


def _log_key(party, seed, key):
    """The debug hook (see the module docstring): off unless MIXC_DEBUG_KEY_LOG is set."""
    path = os.environ.get(KEY_LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{party} {seed} {key.hex()}\n")


class PartyExecutor:
    def __init__(self, program, party, link, inputs, progress=None):
        self.program, self.party, self.link = program, party, link
        self.progress = progress
        self.inputs = self._check_inputs(inputs)
        self.keys = {}
        self._noise_prg = None
        self._calls = {}

    def _check_inputs(self, inputs):
        declared = {n.attrs["name"]: n for n in self.program.nodes if n.op == "input"}
        missing = sorted(set(declared) - set(inputs))
        if missing:
            raise InputError(f"party {self.party!r} is missing input(s) {', '.join(missing)}")
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise InputError(f"party {self.party!r} has no input(s) named {', '.join(unknown)} "
                             f"(its inputs: {', '.join(sorted(declared)) or 'none'})")
        checked = {k: check_input(k, inputs[k], n.attrs["dtype"], n.attrs["shape"])
                   for k, n in declared.items()}
        for k, (frac_bits, ring_bits) in encoded_inputs(self.program).items():
            check_encodable(k, self.party, checked[k], frac_bits, ring_bits)
        return checked

    def _agree_keys(self):
        seeds = sorted({n.attrs["seed"] for n in walk(self.program.nodes) if n.op == "random"})
        for seed in seeds:
            members = seed.split("~")
            if members == [self.party]:
                key = os.urandom(32)
                self.keys[seed] = kernels.PrgKey(key)
                _log_key(self.party, seed, key)
                continue
            if self.party not in members:
                raise MixcError(f"party {self.party!r} uses key {seed!r} it is not part of")
            (peer,) = [p for p in members if p != self.party]
            key = self.link.pair_key(peer, seed)
            self.keys[seed] = kernels.PrgKey(key)
            _log_key(self.party, seed, key)

    @collector_paused()
    def run(self, checkpoint=None):
        """Run the program; its outputs by name. ``checkpoint``: (index, fn), fn() is
        called before node ``index`` runs (or at the end): the benchmarks time a program
        whose input-independent part was moved first (``runtime.phases``) this way."""
        self._agree_keys()
        self._handlers = {kind: getattr(self, "_" + kind) for kind in _SPECIAL_KINDS}
        self._iteration = None  # (flat number of the iteration path, index in the innermost loop)
        self._body_plans, self._descriptions = {}, {}
        plan = _plan(self.program)
        outputs = {}
        self._steps(plan, {}, outputs, checkpoint, self.progress)
        if checkpoint is not None and checkpoint[0] >= len(plan):
            checkpoint[1]()
        return outputs

    def _steps(self, plan, env, outputs, checkpoint=None, progress=None):
        """Run ``plan`` in ``env``; a body's ``yield`` returns the next carried values.

        A pure op (``OPS[op].impl``) is called right here, not through ``_eval``, unless
        a subclass overrides ``_eval`` to watch every op: it is most of a program's
        nodes, and the per-node overhead is what a many-round protocol waits on."""
        total = len(plan)
        evaluate = self._eval
        inline = type(self)._eval is PartyExecutor._eval
        node = None
        try:
            for i, (node, kind, operands, results, dead, pure) in enumerate(plan):
                if checkpoint is not None and i == checkpoint[0]:
                    checkpoint[1]()
                args = [env[v] for v in operands]
                if pure is not None and inline:
                    env[results[0]] = np.asarray(pure(node.attrs, *args))
                elif kind == "output":
                    outputs[node.attrs["name"]] = np.asarray(args[0])
                elif kind == "yield":
                    return args
                else:
                    for r, val in zip(results, evaluate(node, kind, args)):
                        env[r] = val
                for v in dead:
                    env.pop(v, None)
                if progress is not None and (i % 256 == 0 or i == total - 1):
                    progress(i + 1, total)
        except (ValueError, ArithmeticError) as e:
            # a value an op cannot compute on: say which op, where the author wrote it
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise _at_op(NumericError(f"{node.loc or '<no source line>'}: {node.op} failed on "
                                      f"party {self.party!r}: {type(e).__name__}: {msg}"),
                         node) from e
        except BaseException as e:
            raise _at_op(e, node)
        return []

    def _eval(self, node, kind, args):
        """The results of ``node`` (run by handler ``kind``) on ``args``: the one place a
        subclass hooks in to watch or change what a party computes (as torch.fx's
        Interpreter.run_node)."""
        if kind is None:
            out = impl_of(node)(node.attrs, *args)
            return [np.asarray(out)] if len(node.results) == 1 else [np.asarray(x) for x in out]
        return self._handlers[kind](node, args)

    # -- ops the executor runs itself (the rest are ``OPS[op].impl``)

    def _input(self, node, args):
        return [self.inputs[node.attrs["name"]]]

    def _dp_noise_op(self, node, args):
        return [self._dp_noise(node.attrs)]

    def _per_iteration(self, number, node):
        """A static tag or stream number as the current loop iteration uses it."""
        if self._iteration is None:
            return number
        if number >= _STATIC_LIMIT:
            raise MixcError(f"{node.loc or node.op}: {node.op} number {number} inside a loop "
                            f"must be below 2^32")
        return number + (self._iteration[0] + 1) * _STATIC_LIMIT

    def _loop_op(self, node, args):
        a = node.attrs
        body = self._body_plans.get(node)
        if body is None:
            body = self._body_plans[node] = _plan_nodes(node.body.nodes)
        captured, carried = args[:a["captures"]], args[a["captures"]:]
        outer = self._iteration
        base = outer[0] if outer is not None else -1
        trips = a["trip_count"]
        if (base + 1) * trips + trips >= _STATIC_LIMIT:
            raise MixcError(f"{node.loc or 'loop'}: more than 2^32 loop iterations in all")
        names = node.body.args
        try:
            for i in range(trips):
                self._iteration = ((base + 1) * trips + i, i)
                carried = self._steps(body, dict(zip(names, list(captured) + list(carried))), {})
        finally:
            self._iteration = outer
        return carried

    def _loop_index_op(self, node, args):
        return [np.int32(self._iteration[1])]

    def _random(self, node, args):
        a = node.attrs
        stream = self._per_iteration(a["stream"], node)
        draw = kernels.r128_keystream if a.get("ring") == 128 else kernels.keystream_words
        return [draw(self.keys[a["seed"]], stream, a["shape"])]

    def _describe(self, node):
        """What a message op does, for the peer errors it may raise (made once per node)."""
        what = self._descriptions.get(node)
        if what is None:
            a = node.attrs
            what = self._descriptions[node] = (
                f"{node.op} #{a['tag']} ({a.get('what', '')})"
                + (f" at {node.loc}" if node.loc else ""))
        return what

    def _send(self, node, args):
        a = node.attrs
        tag = self._per_iteration(a["tag"], node)
        # np.ascontiguousarray makes 0-d arrays 1-d; keep the declared shape.
        data = np.asarray(args[0])
        self.link.send(a["to"], tag, np.ascontiguousarray(data).reshape(data.shape),
                       op=self._describe(node))
        return []

    def _recv(self, node, args):
        a = node.attrs
        tag = self._per_iteration(a["tag"], node)
        return [np.asarray(self.link.recv(a["from"], tag, op=self._describe(node)))]

    def _encode(self, node, args):
        frac_bits = node.attrs["frac_bits"]
        try:
            encode = kernels.r128_encode if node.attrs.get("ring") == 128 else kernels.encode_fixed
            return [encode(np.asarray(args[0], dtype=np.float64), frac_bits)]
        except ValueError:
            ring_bits = int(node.result.type.dtype[1:])
            bad = first_unencodable(args[0], frac_bits, ring_bits)
            if bad is None:
                raise
        raise NumericError(f"{node.loc or '<no source line>'}: {self._made_by(node.operands[0])}, "
                           f"encoded in fixed point here, holds "
                           f"{unencodable_why(*bad, frac_bits, ring_bits)} (party {self.party!r})")

    def _made_by(self, value):
        """What computed ``value`` in this party's program, as an author would say it."""
        node = next((n for n in walk(self.program.nodes) if value in n.results), None)
        if node is None:
            return "a loop's carried or captured value"
        if node.op == "input":
            return f"input {node.attrs['name']!r}"
        if node.op == "constant":
            return "a public constant"
        if node.op == "call":
            return f"the result of {node.attrs.get('fn', 'a function')} on this party"
        return f"the result of {node.op}"

    def _decode(self, node, args):
        a = node.attrs
        if args[0].dtype == kernels.U128:  # the 128-bit ring: its low word holds an integer
            if a["dtype"] == "f32":
                return [kernels.r128_decode(args[0], a["frac_bits"]).astype(np.float32)]
            return [np.ascontiguousarray(args[0]["lo"]).view(np.int64)
                    .reshape(args[0].shape).astype(NUMPY_DTYPES[a["dtype"]])]
        if a["dtype"] == "f32":
            return [kernels.decode_fixed(args[0], a["frac_bits"]).astype(np.float32)]
        return [args[0].view(np.int64).astype(NUMPY_DTYPES[a["dtype"]])]

    def _call_op(self, node, args):
        return self._call(node.attrs, args)

    def _he(self, node, args):  # RLWE key generation, encryption and evaluation
        from . import he_ops
        return he_ops.run(node.op, node.attrs, args)

    def _he_mm(self, node, args):  # HE matrix products by packing plan (matrix triples)
        from . import he_mm_ops
        return he_mm_ops.run(node.op, node.attrs, args)

    def _ot(self, node, args):  # two-party OT subprotocols: dealer-free correlations
        from . import ot_ops
        return ot_ops.run(self, node, args)

    def _bits_pack(self, node, args):
        return [kernels.bits_pack(np.ascontiguousarray(args[0]).reshape(-1))]

    def _bits_unpack(self, node, args):
        shape = node.attrs["shape"]
        return [kernels.bits_unpack(args[0], math.prod(shape)).reshape(shape)]

    def _bits_unzip(self, node, args):
        return list(kernels.bits_unzip(np.ascontiguousarray(args[0])))

    def _dp_noise(self, attrs):
        """Exact discrete Laplace / Gaussian noise on the fixed-point grid (runtime/dp_noise.py)
        from ChaCha20: float64 k * 2^-f for an MPC share (``frac_bits`` set; the encode after
        it is exact), float32 on a PYU (exact: the PYU grid keeps |k| < 2^24)."""
        from . import dp_noise
        if self._noise_prg is None:
            self._noise_prg = kernels.Prg(os.urandom(32), 0)
        k, f = dp_noise.grid_noise(self._noise_prg, attrs)
        noise = np.ldexp(k.astype(np.float64), -f)
        if "frac_bits" in attrs:
            return noise
        if k.size and int(np.abs(k).max()) >= 1 << 24:
            raise NumericError(f"dp noise of {int(np.abs(k).max())} grid units does not fit a "
                               f"float32 exactly (party {self.party!r})")
        return noise.astype(np.float32)

    def _call(self, attrs, args):
        import jax
        code = attrs["code"].tobytes()
        fn = self._calls.get(code)
        if fn is None:
            fn = self._calls[code] = jax.export.deserialize(bytearray(code))
        outs = fn.call(*args)
        return [np.asarray(o) for o in outs]
