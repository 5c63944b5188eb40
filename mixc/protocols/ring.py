"""The ring an MPC device's shares live in: Z_2^64 (default) or Z_2^128 (``ring: 128``).

Design. A 2-party protocol lowers a secret to ring elements: shares, masks,
triples, opened values, public constants. Which ring is a property of the
device (``Device.ring``), so the protocols ask ``ring_of(device)`` for a
``Ring`` and make every ring value through it -- a PRG draw, an encoding, a
public constant, the TruncPr offsets -- and otherwise emit the same local ops
(add, mul, dot_general, beaver_finish, truncpr_finish, ...) on either ring.
A protocol branches on the width only where the algorithm itself differs
(the carry tree of a comparison over 128 positions; ``bool2pc``), and what
does not run on 128 bits yet calls ``Ring.require_64`` for a clear
NotImplementedError naming the op and the ring.

Representation. The IR dtype of a 128-bit ring element is ``u128``
(``mixc.ir.ops``). numpy has no uint128, so at run time a u128 array has the
structured dtype ``U128``: two little-endian uint64 words per element, low
first, which is the memory of the C kernels' ``unsigned __int128``
(csrc/ring128.c). Chosen over a uint64 array with a trailing axis of 2
because every op that only moves elements (reshape, transpose, slice,
concatenate, broadcast, pad, take, select, the run-time slices of loops,
sends and receives) works on it unchanged, element by element; and because
numpy refuses arithmetic on it, no op can silently compute on a 128-bit
value as if it were something else: the arithmetic ops' impls hand u128
operands to ``runtime.ringops.U128_OPS`` (C kernels: add, sub, neg, mul,
shifts, row sums, fused Beaver and TruncPr finishes, and the GEMM, whose
64x64 cross terms reuse the blocked uint64 GEMM). ``random`` and ``encode``
carry ``ring=128`` to make u128 values; ``ring_widen`` zero-extends u64 words
(the 0/1 bits of a comparison) into the ring; ``ring_words`` views a u128
element as its two words (the boolean circuits work on words).

Why 128 bits: a product of two fixed-point values carries 2f fraction bits
before its truncation, and TruncPr needs it below 2^(k-2) in a k-bit ring.
At k = 64 and f = 18 that caps values at 2^26 (``x * x`` at 2e4 wraps); at
k = 128 and f = 40 the cap is 2^46, and 1e-8 is 10995 units instead of 0.
"""
from dataclasses import dataclass

import numpy as np

from ..ir.ops import U128

RINGS = (64, 128)


@dataclass(frozen=True)
class Ring:
    """Z_2^bits: how the protocols make its values in the IR."""

    bits: int

    @property
    def dtype(self):
        """The IR dtype of an element."""
        return f"u{self.bits}"

    @property
    def bytes(self):
        """Bytes of one element on the wire."""
        return self.bits // 8

    @property
    def words(self):
        """uint64 words of one element."""
        return self.bits // 64

    @property
    def trunc_offset(self):
        """TruncPr adds 2^(bits-2): x + 2^(bits-2) is non-negative for |x| < 2^(bits-2)."""
        return self.bits - 2

    @property
    def _attrs(self):
        # the 64-bit ring is the default of ``random`` and ``encode``: its IR is unchanged
        return {} if self.bits == 64 else {"ring": self.bits}

    def scalar(self, value):
        """``value`` mod 2^bits as a numpy scalar of the ring's run-time dtype."""
        v = int(value) % (1 << self.bits)
        if self.bits == 64:
            return np.uint64(v)
        return np.array((v & ((1 << 64) - 1), v >> 64), dtype=U128)

    def const(self, ctx, party, value, kind="public"):
        """A public ring constant at ``party``."""
        return ctx.const(party, self.scalar(value), kind)

    def random(self, ctx, party, seed, shape, stream, kind="arith"):
        """Uniform ring elements from the PRG stream (seed, stream), drawn at ``party``."""
        return ctx.emit(party, "random", (), kind,
                        {"shape": tuple(shape), "seed": seed, "stream": stream, **self._attrs})

    def encode(self, ctx, party, value, frac, kind):
        """A plaintext value at ``party`` in fixed point with ``frac`` fraction bits."""
        return ctx.emit(party, "encode", [value], kind, {"frac_bits": frac, **self._attrs})

    def widen(self, ctx, party, words, kind):
        """u64 words (bits, small integers) as ring elements, zero-extended."""
        return words if self.bits == 64 else ctx.emit(party, "ring_widen", [words], kind)

    def require_64(self, what, device):
        """Refuse ``what`` off the 64-bit ring: it is not implemented on 128 bits yet."""
        if self.bits != 64:
            raise NotImplementedError(f"{what} on the {self.bits}-bit ring (MPC device "
                                      f"{device.name}, ring: {self.bits})")


def ring_of(device):
    """The ring of an MPC device's shares (64 bits for a device without the option)."""
    return Ring(getattr(device, "ring", None) or 64)
