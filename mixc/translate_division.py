"""Division and remainder: lax.div and lax.rem of fixed-point values and integers.

Fixed point divides by a public value as a product with its reciprocal, and by
a secret one through ``mixc.approx``'s approximate reciprocal. Integer quotients
and float remainders must be exact, so an approximate quotient is corrected by
the exact remainder it leaves: comparisons of that remainder with the divisor
bring it within one, then to the quotient itself. Each rule's docstring states
the ranges it is exact in.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .errors import TraceError
from .translate_arith import _elementwise
from .translate_core import _inline_function, _known_value, _macro, register
from .translate_nonlinear import _approx_attr, range_marked


def _int_quotient(x, d):
    """trunc(x / d) for int32 x and a known nonzero int d (JAX's lax.div), exactly for
    |x| < 2^f: a fixed-point product with 1/|d| and a cast give q0 within one of the
    quotient; the exact remainder x - q0 |d| says which way to correct it."""
    size = np.abs(d).astype(np.int32)
    q0 = (x.astype(jnp.float32) * (1.0 / size).astype(np.float32)).astype(jnp.int32)
    return _corrected_quotient(x, q0, x - q0 * size, size) * np.sign(d).astype(np.int32)


def _corrected_quotient(x, q, r, size):
    """trunc(x / size) from a q within one of it and its exact remainder r = x - q size,
    which must have the sign of x and stay below size in magnitude (four comparisons)."""
    up = jnp.where(x >= 0, r >= size, r > 0).astype(jnp.int32)
    down = jnp.where(x >= 0, r < 0, r <= -size).astype(jnp.int32)
    return q + up - down


def _secret_int_quotient(x, y):
    """trunc(x / y) for int32 x and a secret int32 y (JAX's lax.div), exactly for
    |x| < 2^22 and 1 <= |y| <= 2^12 (approx.div's ranges). approx's reciprocal of |y|,
    computed once, makes q0 = trunc(x / |y|) off by up to 1.5e-5 |x/y| + 1 (64 at
    |x/y| = 2^22); the exact remainder x - q0 |y| over the same reciprocal refines
    q0 to within one, and the exact remainder after that corrects it as for a known
    divisor. y = 0 gives an unspecified quotient (and so the remainder x, as in XLA)."""
    from . import approx
    negative = y < 0
    size = jnp.where(negative, -y, y)
    scale, factor = approx.reciprocal_parts(size.astype(jnp.float32))

    def approximate(n):  # approx.div's order: the small factor last keeps the precision
        return (n.astype(jnp.float32) * scale * factor).astype(jnp.int32)
    q0 = approximate(x)
    q1 = q0 + approximate(x - q0 * size)
    q = _corrected_quotient(x, q1, x - q1 * size, size)
    return jnp.where(negative, -q, q)


def _integer_division(remainder):
    """lax.div / lax.rem of secret integers by a divisor known when compiling, or by a
    secret one (``_secret_int_quotient``: a narrower range, two approximate divisions)."""
    def rule(trace, eqn, ins, dev, loc):
        d = _known_value(trace, ins[1])
        if d is None:
            quotients = trace.int_quotients
            if tuple(ins) not in quotients:
                (quotients[tuple(ins)],) = _inline_function(trace, _secret_int_quotient, ins, dev)
            q = quotients[tuple(ins)]
            if not remainder:
                return [q]
            return _inline_function(trace, lambda x, y, q: x - q * y, [*ins, q], dev)
        if not np.all(d):
            raise TraceError(f"{loc}: integer division by zero")
        d = np.broadcast_to(d, eqn.outvars[0].aval.shape) if d.ndim else d

        def fn(x):
            q = _int_quotient(x, d)
            return x - q * d.astype(np.int32) if remainder else q
        return _inline_function(trace, fn, ins[:1], dev)
    return rule


_DIV_PARTS = range_marked("reciprocal", _macro(_approx_attr("div_parts")))
_DIVIDE = _macro(lambda params: _divide)
_SECRET_DIV = range_marked("reciprocal", _macro(_approx_attr("div")), operand=1)


def _divide(a, *parts):
    """``approx.divide`` of a by a divisor's broadcast ``approx.div_parts``."""
    from . import approx
    return approx.divide(a, parts)


def _select_quotient(cases):
    """a / select_n(p, c0, c1, ...) for known nonzero c_k (the gradient of max and min
    divides by a select of 1 and 2) as select_n(p, a / c0, a / c1, ...): products with
    known reciprocals and a select, no approximation."""
    def quotient(a, p):
        return jax.lax.select_n(p, *[a / np.asarray(c, np.float32) for c in cases])
    return quotient


def _div(trace, eqn, ins, dev, loc):
    """Division by a public value is a product with its reciprocal; by a secret select of
    known values, a select of such products; by any other secret, the reciprocal is
    approximated, before any broadcast of the divisor (softmax divides a row by its
    broadcast sum: one reduction per row, not per element)."""
    if np.issubdtype(eqn.outvars[0].aval.dtype, np.integer):
        return _integer_division(remainder=False)(trace, eqn, ins, dev, loc)
    if ins[1] in trace.public:
        return _elementwise("div")(trace, eqn, ins, dev, loc)
    divisor = ins[1]
    made_by = trace.producer.get(divisor)
    if made_by is not None and made_by.op == "select_n":
        cases = [_known_value(trace, v) for v in made_by.operands[1:]]
        if all(c is not None and np.all(c != 0) for c in cases):
            return _inline_function(trace, _select_quotient(cases),
                                    [ins[0], made_by.operands[0]], dev)
    if made_by is not None and made_by.op == "broadcast_in_dim":
        (small,) = made_by.operands
        parts = _DIV_PARTS(trace, eqn, [small], dev, loc)
        wide = [trace.emit("broadcast_in_dim", [v], [divisor.type], dict(made_by.attrs),
                           loc).result for v in parts]
        return _DIVIDE(trace, eqn, [ins[0], *wide], dev, loc)
    return _SECRET_DIV(trace, eqn, ins, dev, loc)


def _fmod(x, size, quotient):
    """C's fmod(x, y) from size = |y| and a ``quotient`` within one of |x| / size: its
    floor t is within one of the true one, so r = |x| - t size lies in [-size, 2 size)
    and one correction each way brings it into [0, size); the result has the sign of x.
    t size, an integer times a value on the grid, is a multiple of 2^f before its
    truncation, which both TruncPr and the dealer-free truncation keep exact: r is exact."""
    negative = x < 0
    magnitude = jnp.where(negative, -x, x)
    r = magnitude - jnp.floor(quotient(magnitude)) * size
    r = r + jnp.where(r < 0, size, 0.0) - jnp.where(r >= size, size, 0.0)
    return jnp.where(negative, -r, r)


def _rem(trace, eqn, ins, dev, loc):
    """lax.rem, which jnp.fmod is and jnp.remainder (float %) fixes up the sign of:
    integers by ``_integer_division``; floats by ``_fmod``, exactly the fmod of the
    operands as encoded on the 2^-f grid (of float32 operands off the grid: within
    2^-(f+1) (1 + |x/y|), or that close to the other end of the period where fmod is
    that close to 0 or |y|), for
    - y known when compiling: |x| < 2^f and |x/y| < 2^22; the quotient is a product
      with 1/|y| computed from y as encoded (error < |x| 2^-(f+1) + 2^-f + |x/y| 2^-24);
    - a secret y: |x| < 2^22, 2^-8 <= |y| < 2^45 and |x/y| < 2^16 (approx.div, whose
      error 1.5e-5 |x/y| + 2^-17 (1 + 1/(4|y|)) stays below one there).
    A zero divisor, or one that encodes to 0, gives x (JAX: NaN)."""
    if np.issubdtype(eqn.outvars[0].aval.dtype, np.integer):
        return _integer_division(remainder=True)(trace, eqn, ins, dev, loc)
    d = _known_value(trace, ins[1])
    if d is None:
        def by_secret(x, y):
            size = jnp.abs(y)
            return _fmod(x, size, lambda magnitude: magnitude / size)
        return _inline_function(trace, by_secret, ins, dev)
    step = 2.0 ** -dev.fraction_bits
    size = np.round(np.abs(d.astype(np.float64)) / step) * step
    inverse = np.divide(1.0, size, out=np.zeros_like(size), where=size != 0)
    size, inverse = size.astype(np.float32), inverse.astype(np.float32)
    return _inline_function(trace, lambda x: _fmod(x, size, lambda m: m * inverse),
                            ins[:1], dev)


register({"div": _div, "rem": _rem}, linear=("div",), approximated=("div",))
