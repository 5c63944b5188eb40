"""Every IR op, declared once: name, operand count, attributes, type rule.

The printer and the parser are generic over these declarations; the verifier
checks each node against its op's declaration and type rule; the executor
evaluates plaintext and ring values with the op's ``impl`` (numpy, so that
uint64 ring arithmetic wraps mod 2^64 exactly as the protocols need).

A type rule takes the operand types' ``(dtype, shape)`` pairs and the
attributes and returns the results' ``(dtype, shape)`` pairs; placement and
value kind are decided by the passes and checked by ``passes.verify``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import VerifyError

# A Z_2^128 ring element (``ring: 128`` MPC devices). numpy has no uint128: an element is two
# little-endian uint64 words, low first (the memory of the C kernels' unsigned __int128). Ops
# that only move elements work on it as on any dtype; numpy refuses arithmetic on it, which
# runs in runtime.kernels' r128_* (``_ring128`` below), so nothing computes on it by accident.
U128 = np.dtype([("lo", "<u8"), ("hi", "<u8")])
NUMPY_DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64,
                "u8": np.uint8, "u32": np.uint32, "u64": np.uint64, "bool": np.bool_,
                "u128": U128}
RING_DTYPES = ("u64", "u128")  # the dtypes of shares: lowered values of any logical dtype
DTYPE_NAMES = {np.dtype(v): k for k, v in NUMPY_DTYPES.items()}


def dtype_name(dt) -> str:
    try:
        return DTYPE_NAMES[np.dtype(dt)]
    except (KeyError, TypeError):
        raise VerifyError(f"unsupported dtype {dt}") from None


@dataclass(frozen=True)
class OpDef:
    name: str
    operands: int | None        # None: any number
    attrs: tuple                # names of required attributes
    type_rule: object           # (operand (dtype, shape) list, attrs) -> result (dtype, shape) list
    impl: object = None         # numpy evaluation: (attrs, *arrays) -> array or tuple
    results: int | None = 1     # None: as many as the type rule returns
    optional: tuple = ()        # names of optional attributes
    doc: str = ""
    pure: bool = False          # results depend on operands and attrs alone (no party state,
                                # peer, PRG stream or iteration): safe to compute once, anywhere
    impl_u128: object = None    # the evaluation on u128 ring values, where it differs (numpy
                                # has no 128-bit integers: runtime.ringops.U128_OPS)


OPS: dict[str, OpDef] = {}


def op(name, operands=1, attrs=(), optional=(), results=1, impl=None, doc="", pure=None):
    """Declare op ``name``; ``pure`` defaults to whether it has a numpy ``impl``."""
    def register(type_rule):
        OPS[name] = OpDef(name, operands, tuple(attrs), type_rule, impl, results, tuple(optional), doc,
                          impl is not None if pure is None else pure)
        return type_rule
    return register


def opdef(name) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise VerifyError(f"unknown op {name!r}") from None


def infer(name, operand_types, attrs):
    """Result (dtype, shape) pairs of op ``name`` on operands of the given TensorTypes."""
    d = opdef(name)
    if d.operands is not None and len(operand_types) != d.operands:
        raise VerifyError(f"{name} takes {d.operands} operands, got {len(operand_types)}")
    names = _ATTR_NAMES.get(name)  # lowering infers 10^5 types: the names checked as sets
    if names is None:
        names = _ATTR_NAMES[name] = (frozenset(d.attrs),
                                     frozenset(d.attrs + d.optional + COMMON_ATTRS))
    required, allowed = names
    keys = attrs.keys()
    if not (keys <= allowed and required <= keys):
        missing = [a for a in d.attrs if a not in attrs]
        if missing:
            raise VerifyError(f"{name} is missing attribute(s) {', '.join(missing)}")
        unknown = [a for a in attrs if a not in allowed]
        raise VerifyError(f"{name} has unknown attribute(s) {', '.join(unknown)}")
    return d.type_rule([(t.dtype, tuple(t.shape)) for t in operand_types], attrs)


_ATTR_NAMES = {}  # op name -> (the attribute names it needs, those it may carry)


# Attributes any op may carry: the protocol the selector picked, and notes
# that passes leave for auditors.
COMMON_ATTRS = ("protocol", "explicit")


# ---------------------------------------------------------------- elementwise

def _same(ts, attrs):
    """Elementwise: one dtype; equal shapes, where a scalar operand broadcasts."""
    if len(ts) == 2 and ts[0] == ts[1]:  # the commonest case, 10^4 times in a lowering
        return [ts[0]]
    dtypes = {d for d, _ in ts}
    if len(dtypes) != 1:
        raise VerifyError(f"operands have different dtypes {sorted(dtypes)}")
    shapes = {s for _, s in ts if s != ()}
    if len(shapes) > 1:
        raise VerifyError(f"operands have different shapes {sorted(shapes)}")
    return [(ts[0][0], shapes.pop() if shapes else ())]


def _binary(name, fn, doc):
    op(name, operands=2, impl=lambda a, x, y: fn(x, y), doc=doc)(_same)


def _int_div(x, y):
    if np.issubdtype(x.dtype, np.integer):
        q = np.abs(x) // np.abs(y)  # C semantics (round toward zero), as lax.div
        return (np.sign(x) * np.sign(y) * q).astype(x.dtype)
    return x / y


_binary("add", np.add, "elementwise sum (wraps mod 2^64 on u64)")
_binary("sub", np.subtract, "elementwise difference")
_binary("mul", np.multiply, "elementwise product")
_binary("div", _int_div, "elementwise quotient")
_binary("max", np.maximum, "elementwise maximum")
_binary("min", np.minimum, "elementwise minimum")
op("neg", impl=lambda a, x: np.negative(x), doc="elementwise negation")(_same)


@op("convert_element_type", attrs=("new_dtype",),
    impl=lambda a, x: x.astype(NUMPY_DTYPES[a["new_dtype"]]))
def _convert(ts, a):
    return [(a["new_dtype"], ts[0][1])]


@op("integer_pow", attrs=("y",), impl=lambda a, x: x ** a["y"])
def _integer_pow(ts, a):
    return [ts[0]]


def _float_only(ts, a):
    if ts[0][0] not in ("f32", "f64"):
        raise VerifyError("rounding takes float values")
    return [ts[0]]


op("floor", impl=lambda a, x: np.floor(x),
   doc="elementwise floor: the largest integer not above x")(_float_only)

ROUNDING_METHODS = ("to_nearest_even", "away_from_zero")  # lax.RoundingMethod, lower-cased


def _round_impl(a, x):
    if a["rounding_method"] == "to_nearest_even":
        return np.round(x)
    # from the truncation, so that no x + 0.5 is ever rounded by float arithmetic
    whole = np.trunc(x)
    return whole + np.sign(x) * (np.abs(x - whole) >= 0.5)


@op("round", attrs=("rounding_method",), impl=_round_impl,
    doc="elementwise round to the nearest integer; ties per rounding_method: "
        "to_nearest_even (jnp.round, jnp.rint) or away_from_zero (lax.round's default)")
def _round(ts, a):
    if a["rounding_method"] not in ROUNDING_METHODS:
        raise VerifyError(f"round: rounding_method must be one of {', '.join(ROUNDING_METHODS)}")
    return _float_only(ts, a)


# ------------------------------------------------------------- contractions

def _dot_impl(a, x, y):
    (lc, rc), (lb, rb) = a["contract"], a["batch"]
    if x.dtype == np.uint64:
        from ..runtime import ringops
        return ringops.dot_general(x, y, lc, rc, lb, rb)
    out = _dot_general_numpy(x, y, lc, rc, lb, rb)
    return out.astype(x.dtype)


def _dot_general_numpy(x, y, lc, rc, lb, rb):
    """lax.dot_general semantics: batch dims, then x's free dims, then y's free dims."""
    xf = [i for i in range(x.ndim) if i not in lc and i not in lb]
    yf = [i for i in range(y.ndim) if i not in rc and i not in rb]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    xs, ys = [None] * x.ndim, [None] * y.ndim
    for i, j in zip(lb, rb):
        xs[i] = ys[j] = next(letters)
    for i, j in zip(lc, rc):
        xs[i] = ys[j] = next(letters)
    for i in xf:
        xs[i] = next(letters)
    for j in yf:
        ys[j] = next(letters)
    out = [xs[i] for i in lb] + [xs[i] for i in xf] + [ys[j] for j in yf]
    return np.einsum(f"{''.join(xs)},{''.join(ys)}->{''.join(out)}", x, y)


@op("dot_general", operands=2, attrs=("contract", "batch"), impl=_dot_impl,
    doc="lax.dot_general: contract and batch are ((lhs dims), (rhs dims))")
def _dot_general(ts, a):
    (xd, xs), (yd, ys) = ts
    (lc, rc), (lb, rb) = a["contract"], a["batch"]
    if xd != yd:
        raise VerifyError(f"dot_general operands have dtypes {xd} and {yd}")
    if [xs[i] for i in lc] != [ys[j] for j in rc] or [xs[i] for i in lb] != [ys[j] for j in rb]:
        raise VerifyError(f"dot_general dimensions do not match: {xs} and {ys}")
    free_x = [xs[i] for i in range(len(xs)) if i not in lc and i not in lb]
    free_y = [ys[j] for j in range(len(ys)) if j not in rc and j not in rb]
    return [(xd, tuple([xs[i] for i in lb] + free_x + free_y))]


@op("reduce_sum", attrs=("axes",), impl=lambda a, x: np.sum(x, axis=tuple(a["axes"]), dtype=x.dtype))
def _reduce_sum(ts, a):
    d, s = ts[0]
    return [(d, tuple(n for i, n in enumerate(s) if i not in a["axes"]))]


# -------------------------------------------------------------- structural

def _broadcast_impl(a, x):
    shape, dims = a["shape"], a["broadcast_dimensions"]
    expanded = [1] * len(shape)
    for i, d in enumerate(dims):
        expanded[d] = x.shape[i]
    return np.broadcast_to(x.reshape(expanded), shape)


@op("broadcast_in_dim", attrs=("shape", "broadcast_dimensions"), impl=_broadcast_impl)
def _broadcast_in_dim(ts, a):
    d, s = ts[0]
    if len(a["broadcast_dimensions"]) != len(s):
        raise VerifyError("broadcast_in_dim: broadcast_dimensions must name every operand dim")
    return [(d, tuple(a["shape"]))]


@op("reshape", attrs=("new_sizes",), optional=("approx_range",),
    impl=lambda a, x: np.reshape(x, a["new_sizes"]),
    doc="approx_range: (approximation, lo, hi) its input must lie in (see mixc.sanitize)")
def _reshape(ts, a):
    d, s = ts[0]
    if int(np.prod(s)) != int(np.prod(a["new_sizes"])):
        raise VerifyError(f"reshape of {s} to {a['new_sizes']} changes the size")
    return [(d, tuple(a["new_sizes"]))]


@op("transpose", attrs=("permutation",), impl=lambda a, x: np.transpose(x, a["permutation"]))
def _transpose(ts, a):
    d, s = ts[0]
    return [(d, tuple(s[i] for i in a["permutation"]))]


@op("squeeze", attrs=("dimensions",), impl=lambda a, x: np.squeeze(x, tuple(a["dimensions"])))
def _squeeze(ts, a):
    d, s = ts[0]
    return [(d, tuple(n for i, n in enumerate(s) if i not in a["dimensions"]))]


def _slice_impl(a, x):
    return x[tuple(slice(b, e, st) for b, e, st in zip(a["start"], a["limit"], a["strides"]))]


@op("slice", attrs=("start", "limit", "strides"), impl=_slice_impl)
def _slice(ts, a):
    d, s = ts[0]
    return [(d, tuple(max(0, -(-(e - b) // st)) for b, e, st in
                      zip(a["start"], a["limit"], a["strides"])))]


@op("concatenate", operands=None, attrs=("dimension",),
    impl=lambda a, *xs: np.concatenate(xs, axis=a["dimension"]))
def _concatenate(ts, a):
    k = a["dimension"]
    d, s = ts[0]
    return [(d, s[:k] + (sum(t[1][k] for t in ts),) + s[k + 1:])]


def _pad_impl(a, x, value):
    shape = _pad([(x.dtype, x.shape)], a)[0][1]
    out = np.full(shape, value, dtype=x.dtype)
    # Interior padding spreads elements out; negative low/high crop.
    idx, src = [], []
    for (lo, hi, interior), n, m in zip(a["config"], x.shape, shape):
        positions = lo + np.arange(n) * (interior + 1)
        keep = (positions >= 0) & (positions < m)
        idx.append(positions[keep])
        src.append(np.nonzero(keep)[0])
    out[np.ix_(*idx)] = x[np.ix_(*src)]
    return out


@op("pad", operands=2, attrs=("config",), impl=_pad_impl,
    doc="config: (low, high, interior) per dimension; operand 2 is the scalar pad value")
def _pad(ts, a):
    d, s = ts[0]
    out = []
    for (lo, hi, interior), n in zip(a["config"], s):
        out.append(lo + hi + n + max(0, n - 1) * interior)
    return [(d, tuple(out))]


# ------------------------------------------------- values in and out, transfers

@op("input", operands=0, attrs=("name", "dtype", "shape"))
def _input(ts, a):
    return [(a["dtype"], tuple(a["shape"]))]


@op("output", operands=1, attrs=("name",), results=0)
def _output(ts, a):
    return []


@op("constant", operands=0, attrs=("value",), impl=lambda a: a["value"])
def _constant(ts, a):
    v = np.asarray(a["value"])
    return [(dtype_name(v.dtype), v.shape)]


@op("call", operands=None, attrs=("fn", "code", "result_types"), results=None,
    doc="a whole plaintext JAX function on one PYU, carried as a serialized jax.export module")
def _call(ts, a):
    return [(d, tuple(s)) for d, s in a["result_types"]]


@op("to", doc="move a value to another device (share it, or move plaintext on an explicit to)")
def _to(ts, a):
    return [ts[0]]


@op("reveal", doc="open a secret value to one party: the only way secrets become plaintext")
def _reveal(ts, a):
    return [ts[0]]


# ------------------------------------------------------------------- loops

@op("loop", operands=None, attrs=("trip_count", "captures"), results=None,
    doc="run the body trip_count times: operands are the captured values (the first "
        "`captures`), then the initial carried values; the body's arguments bind them in "
        "that order, its `yield` gives the next carried values, the results are the last")
def _loop(ts, a):
    k, n = a["captures"], a["trip_count"]
    if not isinstance(k, int) or not 0 <= k <= len(ts):
        raise VerifyError(f"loop: captures must be an int in [0, {len(ts)}]")
    if not isinstance(n, int) or n < 0:
        raise VerifyError("loop: trip_count must be a non-negative int")
    return list(ts[k:])


@op("yield", operands=None, results=0,
    doc="the last op of a loop body: the carried values of the next iteration")
def _yield(ts, a):
    return []


@op("loop_index", operands=0,
    doc="the iteration number 0, 1, ... of the innermost loop around it (known to every party)")
def _loop_index(ts, a):
    return [("i32", ())]


def _start_of(start, size, limit):
    """Where a run-time slice starts: clamped so the window fits, as lax.dynamic_slice."""
    return min(max(int(start), 0), limit - size)


def _dynamic_slice_impl(a, x, *starts):
    sizes = a["sizes"]
    index = tuple(slice(b, b + n) for b, n in
                  ((_start_of(s, n, d), n) for s, n, d in zip(starts, sizes, x.shape)))
    window = x[index]  # a view where it is contiguous: nothing writes into a value once made
    return window if window.flags.c_contiguous else np.ascontiguousarray(window)


def _dynamic_update_slice_impl(a, x, update, *starts):
    out = np.array(x)
    index = tuple(slice(b, b + n) for b, n in
                  ((_start_of(s, n, d), n) for s, n, d in zip(starts, update.shape, x.shape)))
    out[index] = update
    return out


def _check_starts(name, starts, rank):
    if len(starts) != rank or any(s != ("i32", ()) for s in starts):
        raise VerifyError(f"{name} takes one i32 scalar start per dimension ({rank})")


@op("dynamic_slice", operands=None, attrs=("sizes",), impl=_dynamic_slice_impl,
    doc="lax.dynamic_slice at starts known to every party at run time (a loop's counter)")
def _dynamic_slice(ts, a):
    (d, s), starts = ts[0], ts[1:]
    _check_starts("dynamic_slice", starts, len(s))
    if len(a["sizes"]) != len(s) or any(not 0 <= n <= m for n, m in zip(a["sizes"], s)):
        raise VerifyError(f"dynamic_slice: sizes {tuple(a['sizes'])} do not fit {s}")
    return [(d, tuple(a["sizes"]))]


@op("dynamic_update_slice", operands=None, impl=_dynamic_update_slice_impl,
    doc="lax.dynamic_update_slice at starts known to every party at run time")
def _dynamic_update_slice(ts, a):
    (d, s), (ud, us), starts = ts[0], ts[1], ts[2:]
    _check_starts("dynamic_update_slice", starts, len(s))
    if ud != d or len(us) != len(s) or any(not 0 <= n <= m for n, m in zip(us, s)):
        raise VerifyError(f"dynamic_update_slice: update {ud}{list(us)} does not fit {d}{list(s)}")
    return [(d, s)]


# ------------------------------------------------------ lowered (per-party) ops

def ring_dtype(a):
    """The ring an op's ``ring`` attribute names (bits, 64 when absent) as an IR dtype."""
    bits = a.get("ring", 64)
    if bits not in (64, 128):
        raise VerifyError(f"ring must be 64 or 128, got {bits!r}")
    return f"u{bits}"


@op("random", operands=0, attrs=("shape", "seed", "stream"), optional=("ring",),
    doc="uniform ring words (u64, or u128 with ring=128) from the ChaCha20 stream (key of "
        "`seed`, nonce `stream`)")
def _random(ts, a):
    return [(ring_dtype(a), tuple(a["shape"]))]


@op("encode", attrs=("frac_bits",), optional=("ring",), pure=True,
    doc="plaintext to ring: round(x * 2^frac_bits) mod 2^64 (2^128 with ring=128)")
def _encode(ts, a):
    return [(ring_dtype(a), ts[0][1])]


@op("ring_widen", pure=True, impl=lambda a, x: _kernels().r128_widen(x),
    doc="u64 ring words zero-extended to u128 (0/1 bits and words into the 128-bit ring)")
def _ring_widen(ts, a):
    if ts[0][0] != "u64":
        raise VerifyError("ring_widen takes u64 words")
    return [("u128", ts[0][1])]


@op("ring_words", pure=True, impl=lambda a, x: np.ascontiguousarray(_kernels().r128_words(x)),
    doc="the two u64 words of each u128 element, low word first: a trailing axis of 2")
def _ring_words(ts, a):
    if ts[0][0] != "u128":
        raise VerifyError("ring_words takes u128 values")
    return [("u64", ts[0][1] + (2,))]


def _kernels():
    from ..runtime import kernels
    return kernels


@op("decode", attrs=("frac_bits", "dtype"), pure=True, doc="ring to plaintext: signed value / 2^frac_bits")
def _decode(ts, a):
    return [(a["dtype"], ts[0][1])]


def _integer_only(ts, a):
    if ts[0][0] not in ("u64", "u128", "i32", "u32", "i64"):
        raise VerifyError("shifts take integer values")
    return [ts[0]]


def _ashr(a, x):
    signed = x.view(np.int64) if x.dtype == np.uint64 else x
    return (signed >> a["bits"]).view(x.dtype) if x.dtype == np.uint64 else signed >> a["bits"]


op("shl", attrs=("bits",), impl=lambda a, x: np.left_shift(x, x.dtype.type(a["bits"])),
   doc="left shift")(_integer_only)
def _lshr(a, x):
    unsigned = x.view(x.dtype.str.replace("i", "u"))
    return np.right_shift(unsigned, unsigned.dtype.type(a["bits"])).view(x.dtype)


op("lshr", attrs=("bits",), impl=_lshr,
   doc="logical right shift (of ring words; of the 32-bit pattern for i32)")(_integer_only)
op("ashr", attrs=("bits",), impl=_ashr, doc="arithmetic (sign-filling) right shift")(_integer_only)


@op("xfer", attrs=("tag", "what"),
    doc="global lowered IR only: the operand's party sends it, the result's party receives it")
def _xfer(ts, a):
    return [ts[0]]


def _unpack_impl(a, x):
    pieces, start = [], 0
    for shape in a["shapes"]:
        size = math.prod(shape)
        pieces.append(x[start:start + size].reshape(shape))
        start += size
    return pieces


@op("pack", operands=None, pure=True,
    impl=lambda a, *xs: np.concatenate([np.ravel(x) for x in xs]),
    doc="per-party IR: the operands' elements one after another, flat (several values, one message)")
def _pack(ts, a):
    dtypes = {d for d, _ in ts}
    if len(dtypes) != 1:
        raise VerifyError(f"pack: operands have different dtypes {sorted(dtypes)}")
    return [(ts[0][0], (sum(int(np.prod(s, dtype=np.int64)) for _, s in ts),))]


@op("unpack", attrs=("shapes",), results=None, pure=True, impl=_unpack_impl,
    doc="per-party IR: a pack's values back, one per shape")
def _unpack(ts, a):
    (d, s), = ts
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in a["shapes"]]
    if len(s) != 1 or s[0] != sum(sizes):
        raise VerifyError(f"unpack: {s} does not hold shapes {tuple(a['shapes'])}")
    return [(d, tuple(shape)) for shape in a["shapes"]]


@op("send", attrs=("to", "tag", "what"), results=0, doc="per-party IR: send a value to a peer")
def _send(ts, a):
    return []


@op("recv", operands=0, attrs=("from", "tag", "what", "dtype", "shape"),
    doc="per-party IR: receive a value from a peer")
def _recv(ts, a):
    return [(a["dtype"], tuple(a["shape"]))]


# ------------------------------------------------------ comparisons and logic

def _compare(ts, a):
    (d, s), = _same(ts, a)
    return [("bool", s)]


for _name, _fn in (("lt", np.less), ("eq", np.equal)):
    op(_name, operands=2, impl=lambda a, x, y, fn=_fn: fn(x, y),
       doc="elementwise comparison; the result is bool")(_compare)

_binary("and", np.bitwise_and, "elementwise AND (bitwise on ring words, logical on bool)")
_binary("or", np.bitwise_or, "elementwise OR")
_binary("xor", np.bitwise_xor, "elementwise XOR (bitwise on ring words)")
op("not", impl=lambda a, x: np.logical_not(x) if x.dtype == np.bool_ else np.invert(x),
   doc="elementwise NOT (bitwise on ring words)")(_same)


@op("select_n", operands=3, impl=lambda a, p, f, t: np.where(p, t, f),
    doc="select_n(p, f, t): t where p else f (lax.select_n with two cases)")
def _select_n(ts, a):
    (pd, ps), f, t = ts
    if pd != "bool":
        raise VerifyError("select_n takes a bool predicate")
    return _same([f, t], a)


@op("a2b", doc="an MPC value from arithmetic to boolean (XOR) shares")
def _a2b(ts, a):
    return [ts[0]]


@op("b2a", doc="an MPC value from boolean (XOR) to arithmetic shares")
def _b2a(ts, a):
    return [ts[0]]


# ------------------------------------------------------ packed bits (lowered)

def _words(n):
    return -(-n // 64)


@op("bits_pack", pure=True, doc="bit 0 of each element, packed 64 to a u64 word (element k: bit k%64 of word k//64)")
def _bits_pack(ts, a):
    n = int(np.prod(ts[0][1], dtype=np.int64))
    return [("u64", (_words(n),))]


@op("bits_unpack", attrs=("shape",), pure=True, doc="packed bits back to one 0/1 word per element")
def _bits_unpack(ts, a):
    return [("u64", tuple(a["shape"]))]


@op("bits_unzip", results=2, pure=True, doc="even- and odd-indexed bits of a packed bit stream, each packed")
def _bits_unzip(ts, a):
    (n,) = ts[0][1]
    half = -(-n // 2)
    return [("u64", (half,)), ("u64", (half,))]


# ------------------------------------------------------ fused protocol steps (lowered)
# One op each for the local arithmetic that ends a Beaver product, an AND gate and a
# truncation: one pass over memory instead of ten, and one readable line in the IR.

def _fused(ts, a):
    if len({d for d, _ in ts}) != 1 or ts[0][0] not in RING_DTYPES:
        raise VerifyError("fused protocol steps take ring values of one ring (u64 or u128)")
    return _same(ts, a)


def _kernel(name):
    def impl(a, *xs):
        from ..runtime import kernels
        return kernels.finish_verified(name, [np.asarray(x) for x in xs],
                                       *[a[k] for k in ("bits", "first") if k in a])
    return impl


op("beaver_finish", operands=5, attrs=("first",), impl=_kernel("beaver_finish"),
   doc="z = c + e*b + f*a (+ e*f at the first party): the end of a Beaver product")(_fused)
op("and_finish", operands=5, attrs=("first",), impl=_kernel("and_finish"),
   doc="z = c ^ (e&b) ^ (f&a) (^ e&f at the first party): the end of an AND gate")(_fused)
op("truncpr_finish", operands=3, attrs=("bits", "first"), impl=_kernel("truncpr_finish"),
   doc="TruncPr's local step from the opened c = x + 2^62 + r and shares of msb(r), low(r)")(_fused)


# ------------------------------------------------------ convolution

def _conv_canon(a):
    (lhs, rhs, out) = (tuple(int(i) for i in s) for s in a["dimension_numbers"])
    return lhs, rhs, out


def conv_output_spatial(in_spatial, window, a):
    """Output spatial sizes of a convolution (lax.conv_general_dilated semantics)."""
    out = []
    for i, (n, k) in enumerate(zip(in_spatial, window)):
        lo, hi = a["padding"][i]
        dilated = (n - 1) * a["lhs_dilation"][i] + 1 if n else 0
        padded = dilated + lo + hi
        span = (k - 1) * a["rhs_dilation"][i] + 1
        out.append(max(0, (padded - span) // a["window_strides"][i] + 1))
    return tuple(out)


def conv_patches(x, a, window):
    """im2col: x in the lhs layout -> (K, N) with K = (C, window...) and
    N = (B, out spatial...) in row-major order, so conv = kernel(O, K) . patches."""
    lhs, _, _ = _conv_canon(a)
    x = np.transpose(x, lhs)  # (B, C, spatial...)
    nd = x.ndim - 2
    # lhs dilation: spread the input out with zeros; then pad (negative pads crop)
    if any(d != 1 for d in a["lhs_dilation"]):
        shape = x.shape[:2] + tuple((n - 1) * d + 1 if n else 0
                                    for n, d in zip(x.shape[2:], a["lhs_dilation"]))
        spread = np.zeros(shape, dtype=x.dtype)
        spread[(slice(None), slice(None)) + tuple(slice(None, None, d)
                                                 for d in a["lhs_dilation"])] = x
        x = spread
    pads = [(0, 0), (0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in a["padding"]]
    x = np.pad(x, pads)
    crop = (slice(None), slice(None)) + tuple(
        slice(-min(lo, 0), x.shape[2 + i] + min(hi, 0)) for i, (lo, hi) in enumerate(a["padding"]))
    x = x[crop]
    out_sp = []
    for i in range(nd):
        span = (window[i] - 1) * a["rhs_dilation"][i] + 1
        out_sp.append(max(0, (x.shape[2 + i] - span) // a["window_strides"][i] + 1))
    cols = []
    for offs in np.ndindex(*window):
        sl = tuple(slice(o * a["rhs_dilation"][i],
                         o * a["rhs_dilation"][i] + (out_sp[i] - 1) * a["window_strides"][i] + 1,
                         a["window_strides"][i]) for i, o in enumerate(offs))
        cols.append(x[(slice(None), slice(None)) + sl])  # (B, C, out...)
    b, c = x.shape[:2]
    k = int(np.prod(window, dtype=np.int64))
    stacked = np.stack(cols, axis=2) if cols else np.zeros((b, c, 0) + tuple(out_sp), x.dtype)
    # (B, C, k, out...) -> (C, k, B, out...) -> (C*k, B*prod(out))
    perm = (1, 2, 0) + tuple(range(3, 3 + nd))
    return np.ascontiguousarray(np.transpose(stacked, perm)).reshape(c * k, -1), tuple(out_sp)


def conv_kernel_matrix(w, a):
    """The kernel in the rhs layout -> (O, I*window) matching conv_patches' K order."""
    _, rhs, _ = _conv_canon(a)
    w = np.transpose(w, rhs)
    return np.ascontiguousarray(w).reshape(w.shape[0], -1)


def conv_output_perm(a, nd):
    """Permutation taking the canonical result (O, B, out...) to the out layout."""
    _, _, out = _conv_canon(a)
    perm = [0] * (nd + 2)
    perm[out[0]] = 1
    perm[out[1]] = 0
    for i in range(nd):
        perm[out[2 + i]] = 2 + i
    return tuple(perm)


def _conv_impl(a, x, w):
    if a["feature_group_count"] != 1 or a["batch_group_count"] != 1:
        raise NotImplementedError("grouped convolution")
    _, rhs, _ = _conv_canon(a)
    window = tuple(w.shape[i] for i in rhs[2:])
    patches, out_sp = conv_patches(x, a, window)
    km = conv_kernel_matrix(w, a)
    if x.dtype == np.uint64:
        from ..runtime import kernels
        z = kernels.ring_matmul(np.ascontiguousarray(km), np.ascontiguousarray(patches))
    else:
        z = (km.astype(np.float64) @ patches.astype(np.float64)).astype(x.dtype)
    b = np.transpose(x, _conv_canon(a)[0]).shape[0]
    z = z.reshape((km.shape[0], b) + out_sp)
    return np.transpose(z, conv_output_perm(a, len(out_sp)))


CONV_ATTRS = ("window_strides", "padding", "lhs_dilation", "rhs_dilation", "dimension_numbers",
              "feature_group_count", "batch_group_count")


@op("conv_general_dilated", operands=2, attrs=CONV_ATTRS, impl=_conv_impl,
    doc="lax.conv_general_dilated; dimension_numbers = (lhs, rhs, out) specs "
        "((batch, feature, spatial...) of lhs, (out, in, spatial...) of rhs, (batch, feature, "
        "spatial...) of the result); no feature or batch groups")
def _conv_general_dilated(ts, a):
    (xd, xs), (wd, ws) = ts
    if xd != wd:
        raise VerifyError(f"conv_general_dilated operands have dtypes {xd} and {wd}")
    if a["feature_group_count"] != 1 or a["batch_group_count"] != 1:
        raise VerifyError("conv_general_dilated: grouped convolutions are not supported")
    lhs, rhs, out = _conv_canon(a)
    if xs[lhs[1]] != ws[rhs[1]]:
        raise VerifyError(f"conv_general_dilated: {xs[lhs[1]]} input features, kernel takes "
                          f"{ws[rhs[1]]}")
    nd = len(xs) - 2
    out_sp = conv_output_spatial([xs[i] for i in lhs[2:]], [ws[i] for i in rhs[2:]], a)
    canon = (xs[lhs[0]], ws[rhs[0]]) + out_sp  # (B, O, out...)
    shape = [0] * (nd + 2)
    for i, dim in enumerate(out):
        shape[dim] = canon[i]
    return [(xd, tuple(shape))]


@op("conv_patches", attrs=CONV_ATTRS + ("window",),
    impl=lambda a, x: conv_patches(x, a, tuple(a["window"]))[0],
    doc="im2col of a convolution's input: (C*window, B*out spatial), so that "
        "conv = kernel matrix (O, C*window) . patches")
def _conv_patches_type(ts, a):
    d, s = ts[0]
    lhs, _, _ = _conv_canon(a)
    out_sp = conv_output_spatial([s[i] for i in lhs[2:]], a["window"], a)
    k = s[lhs[1]] * int(np.prod(a["window"], dtype=np.int64))
    return [(d, (k, s[lhs[0]] * int(np.prod(out_sp, dtype=np.int64))))]


@op("take", attrs=("indices", "shape"),
    impl=lambda a, x: np.asarray(x).reshape(-1)[np.asarray(a["indices"], dtype=np.int64)]
    .reshape(a["shape"]),
    doc="gather from the flattened operand: result.flat[i] = operand.flat[indices[i]] "
        "(also the frontend's gathers, reversals, scatters... with indices known when compiling)")
def _take(ts, a):
    indices = np.asarray(a["indices"])
    if int(np.prod(a["shape"], dtype=np.int64)) != indices.size:
        raise VerifyError("take: indices do not fill the shape")
    size = int(np.prod(ts[0][1], dtype=np.int64))
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        raise VerifyError(f"take: indices must be in [0, {size})")
    return [(ts[0][0], tuple(a["shape"]))]


# ------------------------------------------------------ private values (MPC)

@op("share", doc="a private MPC value (plaintext at its one owner) to arithmetic shares")
def _share(ts, a):
    return [ts[0]]


# ------------------------------------------------------ HE (lowered; runtime.he_ops)
# Ciphertexts are u8 byte arrays of serialised ciphertexts; an element's place is a flat
# position (ciphertext * n + coefficient). Byte sizes follow from the attributes.

def _he():
    from ..runtime import he_ops
    return he_ops


def _ct_bytes(count, kind="full"):
    h = _he()
    return int(count) * (h.SEEDED if kind == "seeded" else h.FULL)


@op("he.keygen", operands=0, results=2, optional=("t_bits",),
    doc="key owner: a fresh RLWE key pair (secret key, public key) as bytes; t_bits: 128 for "
        "plaintext modulus 2^128 (runtime.he.DEFAULT_128), else 2^64")
def _he_keygen(ts, a):
    sk, pk = _he().key_bytes(a.get("t_bits", 64))
    return [("u8", (sk,)), ("u8", (pk,))]


@op("he.encrypt", operands=2, attrs=("positions", "count"),
    doc="key owner: encrypt ring values (secret key, seeded) into `count` ciphertexts, "
        "element i at flat position positions[i]")
def _he_encrypt(ts, a):
    if np.asarray(a["positions"]).size != int(np.prod(ts[1][1], dtype=np.int64)):
        raise VerifyError("he.encrypt: one position per value")
    return [("u8", (_ct_bytes(a["count"], "seeded"),))]


def _he_pairs(ts, a):
    return [("u8", (_ct_bytes(len(a["pairs"])),))]


op("he.add", operands=2, attrs=("pairs",),
   doc="ciphertext i of the first plus ciphertext j of the second, for (i, j) in pairs")(_he_pairs)
op("he.sub", operands=2, attrs=("pairs",),
   doc="ciphertext i of the first minus ciphertext j of the second, for (i, j) in pairs")(_he_pairs)


def _he_same(ts, a):
    return [("u8", (_ct_bytes(a["count"]),))]


op("he.neg", attrs=("count",), doc="negate every ciphertext")(_he_same)
op("he.add_plain", operands=2, attrs=("positions", "count"),
   doc="add plaintext ring values at flat positions")(_he_same)
op("he.mul_scalar", operands=2, attrs=("count", "bound"),
   doc="multiply every ciphertext by a ring scalar (noise bound: max(bound, |scalar|))")(_he_same)


@op("he.matmul", operands=2, attrs=("plan",),
    doc="W (M x K ring plaintext) . X (encrypted in the plan's input packing): "
        "plan = (M, K, N, mw, kw, nw), coefficient encoding (runtime.he.MatmulPlan)")
def _he_matmul(ts, a):
    return [("u8", (_ct_bytes(_he().matmul_plan(a["plan"]).n_outputs),))]


@op("he.mul_elementwise", operands=2, attrs=("size",),
    doc="x (encrypted in the elementwise packing) times ring plaintext y, elementwise")
def _he_mul_elementwise(ts, a):
    d = _he().elementwise_d()
    return [("u8", (_ct_bytes(-(-int(a["size"]) // d)),))]


@op("he.extract", operands=None, attrs=("positions", "count"),
    doc="evaluator: sanitise (re-randomise, flood the noise, switch modulus) and keep only "
        "the values at positions, plus the optional mask: (pk, ct[, mask])")
def _he_extract(ts, a):
    if len(ts) not in (2, 3):
        raise VerifyError("he.extract takes (pk, ct) or (pk, ct, mask)")
    return [("u8", (sum(_he().extract_sizes(a["positions"], a["count"])),))]


@op("he.decrypt", operands=2, attrs=("positions", "count"),
    doc="key owner: decrypt extracted ciphertexts to the ring values at positions")
def _he_decrypt(ts, a):
    return [("u64", (np.asarray(a["positions"]).size,))]


@op("dp_noise", operands=0,
    attrs=("mechanism", "scale", "sensitivity", "epsilon", "delta", "shape"),
    optional=("frac_bits",),
    doc="differential-privacy noise of the given mechanism and scale on the fixed-point grid "
        "2^-frac_bits (f64, exact; a PYU's grid when absent: f32) (see mixc/dp.py)")
def _dp_noise(ts, a):
    return [("f64" if "frac_bits" in a else "f32", tuple(a["shape"]))]


# ------------------------------------------------------ dealer-free correlations (lowered)
# ``offline: he`` MPC devices (mixc/protocols/dealerfree.py): the two parties make their
# own correlations. Each ot.* op runs a two-party subprotocol with ``peer`` over the link
# (runtime.ot_ops, runtime.ot.OTSession): both parties run the matching op, in the same
# order (``seq``), and its messages use the session's tags [tag_base, tag_base + 2^20).

@op("ot.session", operands=0, attrs=("peer", "base_sender", "tag_base"),
    doc="open the OT-extension session with peer: 2 x 128 base OTs (Chou-Orlandi), one "
        "party base_sender=true; the result is the session's token")
def _ot_session(ts, a):
    return [("u8", (1,))]


def _ot_elementwise(ts, a, values=("u64",)):
    (sd, _ss), (xd, xs) = ts
    if sd != "u8" or xd not in values:
        raise VerifyError(f"ot ops take (session token, {' or '.join(values)} values)")
    if a["role"] not in ("send", "recv"):
        raise VerifyError("ot ops: role is 'send' or 'recv'")
    return [(ring_dtype(a) if "ring" in a else xd, xs)]


_OT_ATTRS = ("peer", "role", "seq", "what")
op("ot.ole", operands=2, attrs=_OT_ATTRS,
   doc="my additive share of x_mine * x_peer mod 2^64 (2^128 for u128 values), elementwise "
       "(Gilboa OLE over IKNP COT; role send: the COT sender)")(
    lambda ts, a: _ot_elementwise(ts, a, RING_DTYPES))
op("ot.bit_ole", operands=2, attrs=_OT_ATTRS, optional=("ring",),
   doc="my additive share of b_mine * b_peer mod 2^64 (u128 mod 2^128 with ring=128) for "
       "0/1 words (one COT per bit)")(_ot_elementwise)
op("ot.and", operands=2, attrs=_OT_ATTRS,
   doc="my XOR share of x_mine & x_peer, bitwise on u64 words (one COT per bit)")(
    _ot_elementwise)


def _ot_triple(ts, a):
    ((sd, _ss),) = ts
    if sd != "u8":
        raise VerifyError("ot triple ops take the session token")
    return [(ring_dtype(a), tuple(a["shape"]))] * 3


op("ot.arith_triple", operands=1, attrs=("peer", "seq", "what", "shape"), results=3,
   optional=("ring",),
   doc="my (a, b, c) of random Beaver triples over Z_2^64 (u128 over Z_2^128 with ring=128), "
       "(a0+a1)(b0+b1) = c0+c1 elementwise (a Gilboa OLE each way)")(_ot_triple)
op("ot.and_triple", operands=1, attrs=("peer", "seq", "what", "shape"), results=3,
   doc="my (a, b, c) of random AND triples on u64 words, (a0^a1)&(b0^b1) = c0^c1 "
       "(one random OT per bit each way)")(_ot_triple)


def _trunc_wrap_finish(a, u, e, g, r, t):
    """Dealer-free truncation's local step (mixc.protocols.dealerfree.truncate)."""
    one, two = np.uint64(1), np.uint64(2)
    f = int(a["bits"])
    s = (one - two * e) * (one - two * g)
    if a["first"]:
        w = e * g + g * (one - two * e) * r + s * t
        base = np.right_shift(u, np.uint64(f)) - np.uint64(1 << (62 - f))
    else:
        w = e * (one - two * g) * r + s * t
        base = np.uint64(0) - np.right_shift(u, np.uint64(f))
    return base + np.left_shift(w, np.uint64(64 - f))


def _trunc_wrap(ts, a):
    (ud, us), words = ts[0], ts[1:]
    if ud not in RING_DTYPES or any(d != "u64" or s != us for d, s in words):
        raise VerifyError("trunc_wrap_finish takes ring values u and u64 words e, g, r, t "
                          "of u's shape")
    return [(ud, us)]


op("trunc_wrap_finish", operands=5, attrs=("bits", "first"), impl=_trunc_wrap_finish,
   doc="dealer-free truncation: from u (x0 + 2^(k-2) at the first party, -x1 at the other; "
       "k = 64 or 128, u's ring), the opened masked bits e, g, my random bits r and my share "
       "t of the random bits' product mod 2^64: my share of floor(x / 2^bits) (+ 1 at most)")(
    _trunc_wrap)


def _trunc_wrap_finish128(a, *xs):
    from ..runtime import ot_ops
    return ot_ops.trunc_wrap_finish128(a, *xs)


OPS["trunc_wrap_finish"] = OpDef(**{**OPS["trunc_wrap_finish"].__dict__,
                                    "impl_u128": _trunc_wrap_finish128})


# HE matrix products by packing plan (runtime.he_mm_ops): the dealer-free matrix triples.
# plan = (M, K, N, mw, kw, nw) of runtime.he.MatmulPlan; bytes follow from the plan.

def _he_mm():
    from ..runtime import he_mm_ops
    return he_mm_ops


@op("he_mm.encrypt", operands=2, attrs=("plan",),
    doc="key owner: encrypt X (K x N ring values) in the plan's input packing (seeded "
        "ciphertexts, secret key)")
def _he_mm_encrypt(ts, a):
    M, K, N = (int(v) for v in a["plan"][:3])
    if tuple(ts[1][1]) != (K, N):
        raise VerifyError(f"he_mm.encrypt: X must be {(K, N)}, got {ts[1][1]}")
    return [("u8", (_he_mm().input_bytes(a["plan"]),))]


@op("he_mm.eval", operands=4, attrs=("plan",),
    doc="evaluator: (pk, Enc(X), W (M x K), mask (M x N)) -> W . X + mask, every output "
        "sanitised (re-randomised, noise flooded, modulus switched, result coefficients only)")
def _he_mm_eval(ts, a):
    M, K, N = (int(v) for v in a["plan"][:3])
    if tuple(ts[2][1]) != (M, K) or tuple(ts[3][1]) != (M, N):
        raise VerifyError(f"he_mm.eval: W must be {(M, K)} and the mask {(M, N)}")
    return [("u8", (sum(_he_mm().output_sizes(a["plan"])),))]


@op("he_mm.decrypt", operands=2, attrs=("plan",),
    doc="key owner: decrypt he_mm.eval's sanitised outputs to the M x N ring values (u128 "
        "for a plan whose seventh entry is 128: plaintext modulus 2^128)")
def _he_mm_decrypt(ts, a):
    M, K, N = (int(v) for v in a["plan"][:3])
    return [("u128" if tuple(a["plan"][6:7]) == (128,) else "u64", (M, N))]


# ------------------------------------------------------ u128 ring values
# numpy cannot compute on U128: each arithmetic op's impl hands u128 operands to
# runtime.ringops.U128_OPS, and keeps its numpy path for every other dtype.

def _ring128(name):
    def impl(a, *xs):
        from ..runtime import ringops
        return ringops.U128_OPS[name](a, *xs)
    OPS[name] = OpDef(**{**OPS[name].__dict__, "impl_u128": impl})


def impl_of(node):
    """The numpy evaluation of ``node``: its op's ``impl``, or ``impl_u128`` when it reads
    u128 ring values (chosen from the IR types once, not per call)."""
    d = OPS[node.op]
    if d.impl_u128 is not None and any(v.type.dtype == "u128" for v in node.operands):
        return d.impl_u128
    return d.impl


for _name in ("add", "sub", "mul", "neg", "shl", "lshr", "ashr", "reduce_sum", "dot_general",
              "and", "or", "xor", "not", "beaver_finish", "truncpr_finish",
              "conv_general_dilated"):
    _ring128(_name)
