"""The jaxpr walker, the rule table it reads, and what every rule family shares.

``PRIMITIVES`` maps a JAX primitive's name to its rule: a function
``rule(trace, eqn, ins, dev, loc)`` of the equation and its operands' IR values
that emits the IR ops computing it on the device and returns the results' IR
values. The family modules (``mixc.translate_*``) fill it through ``register``
when ``mixc.translate`` imports them; ``_translate`` only looks rules up, so a
new primitive is one rule in its family's table.

Shared by the families: the author-frame helpers that make every error name the
author's line; constants and constant folding (values computed from constants
are known while compiling, so JAX computes any op on them now, exactly, where a
rule would approximate); and the ways a rule emits IR: ``_simple`` (one IR op),
``_macro`` (a JAX function of supported ops, traced once and inlined) and
``_inline`` (a jaxpr JAX already has, such as a loop body).
"""
from __future__ import annotations

import inspect
import os

import jax
import numpy as np

from .errors import TraceError, VerifyError
from .ir.core import TensorType
from .ir.ops import dtype_name, infer
from .sanitize import warn_imprecise_constant

# every mixc module, this one included, lives here: frames in it are not the author's
_MIXC_DIR = os.path.dirname(os.path.abspath(__file__))


def _author_frame():
    """The innermost stack frame outside mixc and JAX: the author's line."""
    for info in inspect.stack(0):
        path = os.path.abspath(info.filename)
        if path.startswith(_MIXC_DIR) or os.sep + "jax" + os.sep in path:
            continue
        return path, info.lineno
    return "<unknown>", 0


def _loc(frame=None) -> str:
    path, line = frame or _author_frame()
    return f"{os.path.basename(path)}:{line}"


def _where(frame=None) -> str:
    path, line = frame or _author_frame()
    return f"{path}:{line}"


_NP = {"f32": np.float32, "i32": np.int32, "bool": np.bool_, "f64": np.float64,
       "i64": np.int64, "u64": np.uint64, "u32": np.uint32, "u8": np.uint8}


def _aval_type(aval, device):
    return TensorType(dtype_name(aval.dtype), tuple(aval.shape), device.name)


def _avals(ins):
    return [jax.ShapeDtypeStruct(v.type.shape, _NP[v.type.dtype]) for v in ins]


def _ints(xs):
    return tuple(int(x) for x in xs)


def _constant(trace, value, dev, loc):
    """A public constant; 64-bit values narrow to the 32-bit types the IR computes in."""
    value = np.asarray(value)
    if value.dtype == np.float64:
        value = value.astype(np.float32)
    if value.dtype == np.int64:
        value = value.astype(np.int32)
    warn_imprecise_constant(trace, value, dev, loc)
    t = TensorType(dtype_name(value.dtype), value.shape, dev.name)
    return trace.emit("constant", (), [t], {"value": value}, loc).result


def _known_value(trace, value):
    """The value of a public (constants-only) IR value; None if not known when compiling."""
    return trace.known.get(value)


def _all_known(trace, ins):
    return all(_known_value(trace, v) is not None for v in ins)


# The rule table, filled by the family modules (``register``).
PRIMITIVES = {}
# What an HE device evaluates: functions linear in its ciphertexts (a product needs one
# plaintext side; the protocol refuses a product of two ciphertexts by name and line).
HE_PRIMITIVES = set()
# rules that approximate (or expand into approximations): on known values, folded exactly
_APPROXIMATED = set()


def register(rules, linear=(), approximated=()):
    """Adds a family's ``rules`` (primitive name -> rule) to ``PRIMITIVES``: ``linear``
    names those an HE device evaluates, ``approximated`` those whose rule approximates.
    A name has one rule: a second registration is a mistake, not an override."""
    twice = sorted(PRIMITIVES.keys() & rules.keys())
    stray = sorted((set(linear) | set(approximated)) - rules.keys())
    if twice or stray:
        raise ValueError(f"rules registered twice: {twice}; flags without a rule: {stray}")
    PRIMITIVES.update(rules)
    HE_PRIMITIVES.update(linear)
    _APPROXIMATED.update(approximated)


# jnp functions with a better way on secrets than the jaxpr JAX makes of them, by
# the name of their jit: [(reference, rule)]. The rule runs where the call's jaxpr is
# the one ``reference`` makes (so a user function of the same name is inlined as usual).
CALLS = {}


def register_calls(calls):
    """Adds ``{jit name: [(reference function, rule), ...]}`` to ``CALLS``."""
    twice = sorted(CALLS.keys() & calls.keys())
    if twice:
        raise ValueError(f"call rules registered twice: {twice}")
    CALLS.update(calls)


_REFERENCE_JAXPRS = {}


def _call_rule(trace, eqn, ins):
    """The rule of a jnp function called here (``CALLS``), if its jaxpr is the reference
    one and some operand is secret; None: inline the call."""
    name = eqn.params.get("name")
    if name not in CALLS or _all_known(trace, ins):
        return None
    avals = tuple(jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype, weak_type=v.aval.weak_type)
                  for v in eqn.invars)
    text = str(eqn.params["jaxpr"])
    for number, (reference, rule) in enumerate(CALLS[name]):
        key = (name, number, tuple((a.shape, a.dtype, a.weak_type) for a in avals))
        if key not in _REFERENCE_JAXPRS:
            _REFERENCE_JAXPRS[key] = _reference_text(reference, avals, name)
        if _REFERENCE_JAXPRS[key] == text:
            return rule
    return None


def _reference_text(reference, avals, name):
    """The printed jaxpr of the call ``name`` that ``reference`` makes on ``avals``; None
    where it makes none (or cannot take such operands)."""
    try:
        eqns = jax.make_jaxpr(reference)(*avals).eqns
    except (TypeError, ValueError):     # operands the reference does not take
        return None
    calls = [e for e in eqns if e.params.get("name") == name]
    return str(calls[0].params["jaxpr"]) if len(calls) == 1 else None


# The walker.

def _translate(trace, jaxpr, env, dev, frame, pinned=False):
    """IR for a jaxpr's equations; ``pinned``: every op gets ``frame`` as its location
    (for mixc's own expansions, whose lines mean nothing to the author)."""
    for eqn in jaxpr.eqns:
        eframe = frame if pinned else _eqn_frame(eqn, frame)
        loc = _loc(eframe)
        ins = [_read(trace, env, v, dev, loc) for v in eqn.invars]
        sub = _inner_jaxpr(eqn)
        rule = _call_rule(trace, eqn, ins) if sub is not None else None
        block, start = trace.block, len(trace.block.nodes)
        if sub is not None and rule is None:
            outs = _translate_call(trace, sub, ins, dev, eframe, loc, pinned)
        else:
            rule = rule or _rule(trace, eqn.primitive.name, ins, dev, eframe)
            trace.frame = eframe
            outs = rule(trace, eqn, ins, dev, loc)
            _check_types(block.nodes[start:], eqn, outs, eframe)
        for var, v in zip(eqn.outvars, outs):
            env[var] = v
    return [_read(trace, env, v, dev, _loc(frame)) for v in jaxpr.outvars]


def _check_types(nodes, eqn, outs, frame):
    """Every IR op a rule emitted types as its type rule says, and the rule's results
    have JAX's dtypes and shapes: an op whose operands disagree (an int32 operand of a
    float product, encoded without fraction bits) would compute a wrong value silently,
    so it is a compile error at the author's line instead."""
    for node in nodes:
        if node.op in ("call", "loop"):
            continue
        try:
            expected = infer(node.op, [v.type for v in node.operands], node.attrs)
        except VerifyError as e:
            raise TraceError(f"{_where(frame)}: '{eqn.primitive.name}' made an ill-typed "
                             f"{node.op}: {e}") from None
        got = [(r.type.dtype, tuple(r.type.shape)) for r in node.results]
        if got != [(d, tuple(s)) for d, s in expected]:
            raise TraceError(f"{_where(frame)}: '{eqn.primitive.name}' made a {node.op} "
                             f"typed {got} where its operands make {expected}")
    for var, v in zip(eqn.outvars, outs):
        try:
            want = (dtype_name(var.aval.dtype), tuple(var.aval.shape))
        except VerifyError as e:
            raise TraceError(f"{_where(frame)}: '{eqn.primitive.name}': {e} on a secret "
                             "device") from None
        if (v.type.dtype, tuple(v.type.shape)) != want:
            raise TraceError(f"{_where(frame)}: '{eqn.primitive.name}' here gives "
                             f"{v.type.dtype}{list(v.type.shape)} where JAX gives "
                             f"{want[0]}{list(want[1])}")


def _eqn_frame(eqn, frame):
    from jax._src import source_info_util
    # not mixc's own frames: a jnp function placed as it is (device(mpc)(jnp.negative))
    # has none of the author's inside it, and its line is the device call's
    f = next((f for f in source_info_util.user_frames(eqn.source_info.traceback)
              if not os.path.abspath(f.file_name).startswith(_MIXC_DIR)), None)
    if f is None:
        return frame
    return f.file_name, f.start_line


def _read(trace, env, var, dev, loc):
    from jax.extend.core import Literal
    if isinstance(var, Literal):
        return _constant(trace, np.asarray(var.val, dtype=var.aval.dtype), dev, loc)
    return env[var]


def _inner_jaxpr(eqn):
    """The body of call-like primitives (jit, custom_jvp/vjp), inlined in place; loops
    and conds have bodies too, but rules of their own."""
    if eqn.primitive.name in ("while", "scan", "cond"):
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if j is None:
            continue
        if hasattr(j, "jaxpr"):
            return j.jaxpr, j.consts
        return j, ()
    return None


def _translate_call(trace, sub, ins, dev, frame, loc, pinned):
    inner, consts = sub
    env = dict(zip(inner.invars, ins))
    for var, c in zip(inner.constvars, consts):
        env[var] = _constant(trace, np.asarray(c), dev, loc)
    return _translate(trace, inner, env, dev, frame, pinned)


def _rule(trace, name, ins, dev, frame):
    """The rule for primitive ``name`` on ``ins``: folding where every operand is known
    (and the table has no rule, or an approximate one); an error naming the author's
    line where the device cannot compute it."""
    rule = PRIMITIVES.get(name)
    if (rule is None or name in _APPROXIMATED) and ins and _all_known(trace, ins):
        rule = _folded_constant    # exact, where an approximation would be used
    if dev.kind == "HE" and name not in HE_PRIMITIVES \
            and not all(v in trace.public for v in ins):
        raise TraceError(f"{_where(frame)}: '{name}' is not a linear op: HE device "
                         f"{dev.name!r} evaluates only linear functions of its "
                         f"ciphertexts ({', '.join(sorted(HE_PRIMITIVES))}); compute "
                         "it on an MPC device or at the key owner")
    if rule is None:
        raise TraceError(f"{_where(frame)}: jnp op '{name}' is not supported on MPC "
                         f"device {dev.name!r} yet: no protocol computes it on secret "
                         "values (it runs on a PYU, and on values known when "
                         "compiling; mixc.translate.PRIMITIVES lists the MPC ops)")
    return rule


def _folded_constant(trace, eqn, ins, dev, loc):
    """Any op on values known when compiling (a positional encoding's sin of positions):
    JAX computes it now, and its result is a public constant."""
    args = [_known_value(trace, v).astype(var.aval.dtype) for v, var in zip(ins, eqn.invars)]
    out = eqn.primitive.bind(*args, **eqn.params)
    outs = out if eqn.primitive.multiple_results else [out]
    return [_constant(trace, np.asarray(o), dev, loc) for o in outs]


# How rules emit IR.

def _simple(op, attr_fn=lambda p: {}):
    """A primitive that is one IR op, its attributes ``attr_fn`` of the params."""
    def rule(trace, eqn, ins, dev, loc):
        t = [_aval_type(v.aval, dev) for v in eqn.outvars]
        return trace.emit(op, ins, t, attr_fn(eqn.params), loc).results
    return rule


def _inline(trace, closed, ins, dev, pinned=False):
    """The IR of a closed jaxpr applied to ``ins``: its ops at the author's lines, or all
    at the current one (``pinned``: mixc's own expansions)."""
    env = dict(zip(closed.jaxpr.invars, ins))
    for var, c in zip(closed.jaxpr.constvars, closed.consts):
        env[var] = _constant(trace, np.asarray(c), dev, _loc(trace.frame))
    return _translate(trace, closed.jaxpr, env, dev, trace.frame, pinned)


def _inline_function(trace, fn, ins, dev):
    """The IR of a JAX function of ops mixc runs natively, applied to ``ins``."""
    return _inline(trace, jax.make_jaxpr(fn)(*_avals(ins)), ins, dev, pinned=True)


def _macro(build):
    """An op written as a JAX function (``build(params)``) of ops mixc runs natively,
    traced and inlined. Traces are cached per (params, operand types): a training loop
    reuses them."""
    traced = {}

    def rule(trace, eqn, ins, dev, loc):
        avals = _avals(ins)
        key = (repr(sorted(eqn.params.items())), tuple((a.shape, a.dtype) for a in avals))
        if key not in traced:
            traced[key] = jax.make_jaxpr(build(eqn.params))(*avals)
        return _inline(trace, traced[key], ins, dev, pinned=True)
    return rule


class _Params:
    """Stands in for a jaxpr equation where a rule reads only ``params``: one rule
    calling another with params of its own."""

    def __init__(self, **params):
        self.params = params
