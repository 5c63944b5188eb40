"""Where fixed point stops being right, and the warnings that say so (``RangeWarning``).

Two kinds of check, both naming the author's ``file:line``:

- at build time, a constant on an MPC or HE device that its fixed-point encoding
  rounds to 0, or that keeps fewer than half its significant bits
  (``warn_imprecise_constant``: ``eps = 1e-8`` at 18 fraction bits is 0); one
  inside JAX's own code only where its rounding can change a result;
- at run time, in ``simulate``, every secret intermediate against the range of
  the op that made it (``mixc.runtime.sanitizer``, which holds every party's
  shares): a product before its truncation, a comparison's difference, an input
  being encoded, an approximation's input, and a ciphertext product on an HE
  device against the plaintext modulus. The approximations' ranges are
  ``mixc.approx.ERROR_BOUNDS``; the tracer records them where it inlines one (a
  same-shape ``reshape`` of the input carrying ``approx_range``), so the global
  IR a bundle keeps says which value must lie where.

The limits below are the protocols' own (``mixc.protocols.correlations``,
``bool2pc``), for a device's ring of 64 or 128 bits.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from .errors import RangeWarning



def truncation_bits(ring_bits):
    """TruncPr (dealer) and the dealer-free truncation are exact for |x| < 2^(ring - 2)
    before truncation (x + 2^(ring - 2) must keep the sign bit clear)."""
    return ring_bits - 2


def comparison_bits(ring_bits):
    """bool2pc's comparisons take the msb of the difference: exact while
    |a - b| 2^f < 2^(ring - 1)."""
    return ring_bits - 1


def encoding_bits(ring_bits):
    """Fixed-point encoding holds |x| 2^f < 2^(ring - 1)."""
    return ring_bits - 1

# float32's significand; a constant keeping fewer than half of its own bits warns
_SIGNIFICAND_BITS = 24

# Approximations whose stated error holds on all of R (they saturate to the right value):
# their ERROR_BOUNDS range is only where the error was measured, not a limit.
_HOLD_EVERYWHERE = ("logistic", "tanh", "erf", "atan")


def approximation_range(name):
    """(lo, hi) an approximation's input must lie in (``approx.ERROR_BOUNDS``), or None
    when it has no limit to check."""
    from .approx import ERROR_BOUNDS
    if name in _HOLD_EVERYWHERE or name not in ERROR_BOUNDS:
        return None
    lo, hi, _, _ = ERROR_BOUNDS[name]
    return float(lo), float(hi)


def outside_approximation(name, x, lo, hi):
    """The elements of ``x`` where approximation ``name`` leaves its range [lo, hi]:
    reciprocal (and a division's divisor) by magnitude, either sign; exp only above hi
    (below lo it is 0, within the resolution of e^lo); sqrt also exactly at 0."""
    if name == "reciprocal":
        magnitude = np.abs(x)
        return (magnitude < lo) | (magnitude > hi)
    if name == "exp":
        return x > hi
    outside = (x < lo) | (x > hi)
    if name == "sqrt":
        outside &= x != 0
    return outside


def approximation_limit(name, lo, hi):
    """The range of approximation ``name`` as a warning states it."""
    if name == "reciprocal":
        return f"|x| in [{lo:g}, {hi:g}]"
    if name == "exp":
        return f"x <= {hi:g}"
    return f"[{lo:g}, {hi:g}]"


def warn_at(loc, message):
    """A RangeWarning attributed to the author's ``file:line`` ``loc``."""
    filename, _, line = (loc or "<unknown>:0").rpartition(":")
    warnings.warn_explicit(f"{loc}: {message}" if loc else message, RangeWarning,
                           filename or loc, int(line) if line.isdigit() else 0)


# ------------------------------------------------------------ build time: constants

def imprecise_constant(value, fraction_bits):
    """Why fixed point with ``fraction_bits`` cannot keep the float constant ``value``
    (its worst element), or None: a nonzero value that rounds to 0, or one whose
    encoding keeps fewer than half its significant bits."""
    x = np.asarray(value, dtype=np.float32).reshape(-1)
    x = x[np.isfinite(x) & (x != 0)]
    if not x.size:
        return None
    scaled = x.astype(np.float64) * 2.0 ** fraction_bits
    encoded = np.abs(np.rint(scaled))
    if (encoded == 0).any():
        worst = float(x[np.argmax(encoded == 0)])
        return f"the constant {worst:.3g} rounds to 0 at {fraction_bits} fraction bits"
    kept = np.floor(np.log2(encoded)).astype(np.int64) + 1
    significant = _significant_bits(x)
    short = (encoded != np.abs(scaled)) & (2 * kept < significant)
    if not short.any():
        return None
    i = int(np.argmax(short))
    return (f"the constant {float(x[i]):.3g} keeps {kept[i]} of its {significant[i]} "
            f"significant bits at {fraction_bits} fraction bits")


def _significant_bits(x):
    """Bits from the leading to the last set bit of each float32's significand."""
    mantissa, _ = np.frexp(np.abs(x))
    digits = (mantissa.astype(np.float64) * 2.0 ** _SIGNIFICAND_BITS).astype(np.int64)
    lowest = digits & -digits
    return _SIGNIFICAND_BITS - np.log2(lowest).astype(np.int64)


def _in_mixc_expansion():
    """Whether the tracer is inlining one of mixc's own expansions: ``translate_core``'s
    ``_inline`` and ``_translate`` take those with ``pinned`` set (their ops all carry the
    author's line, so the line cannot tell). Looked up only for a constant about to warn."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in ("_inline", "_translate") and frame.f_locals.get("pinned"):
            return True
        frame = frame.f_back
    return False


def warn_imprecise_constant(trace, value, device, loc):
    """Warn (once per line and trace) if ``device`` cannot keep the float constant the
    author wrote (not one of mixc's own expansions: an approximation's coefficients are
    its table's business, and exact at the default 18 fraction bits). A constant inside
    JAX's own code (``jnp.interp``'s 1.42e-14) is not the author's: it warns only where
    its rounding can change a result, and says whose it is and what it feeds."""
    if device.kind not in ("MPC", "HE") or np.asarray(value).dtype != np.float32:
        return
    why = imprecise_constant(value, device.fraction_bits)
    if why is None:
        return
    warned = trace.__dict__.setdefault("imprecise_constant_lines", set())
    if loc in warned or _in_mixc_expansion():
        return
    message = f"{why} on {device.kind} device {device.name!r}: scale it, or compute with " \
              "it on a PYU"
    library = _jax_library_use(value)
    if library is not None:
        function, uses = library
        changed = [op for op, position in uses
                   if not _same_comparisons(op, position, value, device.fraction_bits)]
        if uses and not changed:
            return
        feeds = f" (it feeds {', '.join(sorted(set(changed)))})" if changed else ""
        message = (f"{why} on {device.kind} device {device.name!r}: a constant of JAX's own "
                   f"{function}, not one written here{feeds}, so the result can differ from "
                   "JAX's; compute this call on a PYU if that matters")
    warned.add(loc)
    warn_at(loc, message)


# ------------------------------------------------------------ JAX's own constants

_JAX_DIR = None


def _jax_dir():
    global _JAX_DIR
    if _JAX_DIR is None:
        import jax
        _JAX_DIR = os.path.dirname(os.path.abspath(jax.__file__)) + os.sep
    return _JAX_DIR


def _jax_function(jaxpr):
    """``name (file:line)`` of the JAX library function ``jaxpr`` was traced from, or None
    for anyone else's (the author's, a loop body the author wrote)."""
    info = getattr(jaxpr, "debug_info", None)
    source = getattr(info, "func_src_info", None) or ""
    name, _, where = source.partition(" at ")
    path, _, line = where.rpartition(":")
    if not path or not os.path.abspath(path).startswith(_jax_dir()):
        return None
    return f"{name} ({os.path.basename(path)}:{line})"


def _jax_library_use(value):
    """(JAX's function, [(op, operand position)] of the ops that read the constant) when
    the constant being read belongs to a jaxpr of JAX's own code, else None. Found on the
    tracer's stack (``translate_core``): a literal operand of the equation ``_translate``
    is reading, or a captured constant of the call ``_translate_call`` enters."""
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code.co_name
        if code == "_translate_call":
            inner, var = frame.f_locals.get("inner"), frame.f_locals.get("var")
            function = _jax_function(inner)
            if function is None or var is None:
                return None
            return function, [(e.primitive.name, i) for e in inner.eqns
                              for i, v in enumerate(e.invars) if v is var]
        if code == "_translate":
            function = _jax_function(frame.f_locals.get("jaxpr"))
            if function is None:
                return None
            eqn = frame.f_locals.get("eqn")
            literals = [] if eqn is None else [
                (eqn.primitive.name, i) for i, v in enumerate(eqn.invars)
                if hasattr(v, "val") and _same_value(v, value)]
            return function, literals
        frame = frame.f_back
    return None


def _same_value(literal, value):
    held = np.asarray(literal.val, dtype=literal.aval.dtype).astype(np.float32)
    return held.shape == np.shape(value) and np.array_equal(held, value)


# x OP c for c as the second operand; as the first, the comparison mirrored
_MIRRORED = {"lt": "gt", "gt": "lt", "le": "ge", "ge": "le", "eq": "eq", "ne": "ne"}


def _same_comparisons(op, position, value, fraction_bits):
    """Whether comparing values on the 2^-f grid (every secret and every encoded value is)
    with ``value`` rounded to the grid gives what comparing them with ``value`` itself
    gives: x <= c and x > c need c rounded down, x < c and x >= c rounded up, == and !=
    c on the grid. ``jnp.interp``'s |dx| <= 1.42e-14 is |dx| <= 0 on the grid."""
    if op not in _MIRRORED:
        return False
    op = _MIRRORED[op] if position == 0 else op
    scaled = np.asarray(value, np.float64) * 2.0 ** fraction_bits
    rounded = np.rint(scaled)
    if op in ("le", "gt"):
        return bool(np.all(rounded == np.floor(scaled)))
    if op in ("lt", "ge"):
        return bool(np.all(rounded == np.ceil(scaled)))
    return bool(np.all(rounded == scaled))
