"""MPC-friendly approximations of nonlinear functions (SPEC §7).

Every function here is a plain JAX function built only from operations that
mixc's 2-party fixed-point protocols can run: add, sub, neg, products (secret
x secret, or secret x public constant), division by a public constant,
comparisons against secrets or public constants, ``jnp.where`` with a secret
predicate, ``jnp.minimum``, sums, max reductions, reshapes, broadcasts,
stacking and slicing (to run one approximation on [x, -x] at once).
There is no exp/log/sqrt, no division by a secret, no bit manipulation and no
``lax`` control flow, so when an author writes ``jnp.exp`` (etc.) on an MPC
device, mixc's tracer can inline the function below in its place.

Every constant is a multiple of 2^-18 (the default fixed-point resolution), so
float32 evaluation and the MPC's fixed-point encoding use the same numbers.

Methods, ranges and errors
--------------------------
"bound" is what ``ERROR_BOUNDS`` states and the tests check; "f32" and "fxp"
are the largest errors measured on a dense grid of the range (2e5-4e5 points;
log-spaced for positive ranges; the [1, 4) cores also at every fourth
representable value) against float64 references, in float32 JAX and in an
emulation of mixc's 18-bit fixed point (every product truncated to a multiple
of 2^-18 by TruncPr's stochastic rounding -- worst of 3 seeds -- and, as a
pessimistic check, by floor; inputs and constants encoded to 2^-18), see
``tests/test_approx.py``. For "rel" the fxp figure is the smallest r with
|err| <= r*|f| + FIXED_POINT_ATOL. "prod" counts secret x secret products per
element, "depth" those on the critical path (a select with a secret predicate
and a secret branch counts as one); "cmp" counts secret comparisons per
element and, in parentheses, how many sequential layers they form. Products
by public constants (local, plus one truncation round each) are not counted.

===========  ===============  ====  =======  =======  =======  ====  =====  ==========
function     range            kind  bound    f32      fxp      prod  depth  cmp (lyr)
===========  ===============  ====  =======  =======  =======  ====  =====  ==========
exp          [-16, 30]        rel   1.0e-4   2.9e-5   6.3e-5   10    8      4 (1)
log          [2^-18, 2^45)    abs   4.0e-5   1.6e-5   2.6e-5   8     5      32 (1)
reciprocal   |x| in [2^-18,   rel*  1.5e-5   1.8e-6   7.6e-6   10    7      21 (2)
             2^45), either
             sign
div(a, b)    |b| as above,    rel   1.5e-5   1.8e-6   (below)  32    11     39 (3)
             any |a|, |a/b|
             < 2^44
sqrt         [2^-18, 2^45)    rel   1.0e-5   1.5e-6   5.5e-6   9     6      32 (1)
rsqrt        [2^-18, 2^45)    rel*  3.0e-5   2.0e-5   2.2e-5   8     6      32 (1)
logistic     all of R         abs   2.5e-4   1.6e-4   1.8e-4   7     6      2 (2)
tanh         all of R         abs   4.0e-4   3.2e-4   3.5e-4   7     6      2 (2)
erf          all of R         abs   2.5e-4   1.6e-4   1.7e-4   7     6      2 (2)
atan         all of R         abs   2.5e-5   2.9e-6   1.7e-5   17    13     11 (2)
atan2(y, x)  max(|x|,|y|) in  abs   2.5e-5   3.6e-6   1.9e-5   20    14     25 (3)
             [2^-18, 2^18]
asin         [-1+2^-18,       abs   4.0e-5   2.4e-6   2.8e-5   15    12     12 (2)
             1-2^-18]
acos         as asin          abs   4.0e-5   3.1e-6   2.9e-5   15    12     12 (2)
sinh         [-12, 12]        rel   1.1e-4   1.6e-5   5.7e-5   23    8      6 (1)
cosh         [-12, 12]        rel   1.0e-4   1.6e-5   5.7e-5   16    7      4 (1)
asinh        [-2^19, 2^19]    abs   5.0e-5   1.5e-5   2.7e-5   15    12     21 (3)
acosh        [1+2^-18, 2^19]  abs   6.0e-5   1.6e-5   2.7e-5   20    11     31 (3)
atanh        as asin          abs   4.0e-5   1.3e-5   1.9e-5   11    6      12 (2)
softmax      any logits,      abs   1.0e-4   5.7e-6   5.6e-5   9+    14+    (below)
             rows <= 4096
log_softmax  as softmax       abs   1.5e-4   4.2e-5   1.1e-4   8+    11+    (below)
===========  ===============  ====  =======  =======  =======  ====  =====  ==========

"rel*": the relative bound holds where the result is above ``RESOLUTION_FLOORS``
(2^-16 for reciprocal, i.e. |x| <= 2^16; 2^-15 for rsqrt, x <= 2^30); smaller results,
which have at most 2 or 3 of the 18 fraction bits, are within 2^-17 (measured: 2^-17 in
float32 and fixed point). 2^45 is where the 64-bit ring with 18 fraction bits ends (its
largest value is 2^45 - 2^-18); 2^-18 is its smallest positive value.

Methods, and behaviour outside the range:

- exp: four comparisons (x < -16, x >= 11, x >= 20, x > 30; one layer)
  clamp x to [-16, 30] with one select and pick a shift r 13 ln 2, r = 0, 1
  or 2 (from 11 and from 20), that brings x' = x - r 13 ln 2 into
  [-16, 12]; there P(y) ~ 8 e^y, degree-8 minimax on y = x'/8 in [-2, 1.5],
  and e^x' = (P^2/64)^4 (3 squarings); e^x = e^x' 2^(13 r) by additions
  (doublings, exact) and two selects, which have no truncation and so no 2^26
  limit. The shifted x' stay in [1.99, 11.98], where e^x' has its relative
  error. Below -16 the polynomial's argument and constant term are both
  zeroed, so exp(x) = 0 exactly (true value < 1.2e-7, under the 2^-18
  resolution; no e^-16 floor adding n * 1e-7 to a softmax sum). Above 30:
  e^30 = 1.07e13 = 2^43.3, the largest value kept (room for a sum below the
  ring's 2^45; e^31.19 would be the end). Results above 2^26 (x > 18.0)
  are right but cannot be a factor of a fixed-point product, whose value
  must stay below 2^26 (simulate's range sanitizer warns). Never wraps.
- Full-range reduction (log, sqrt, rsqrt, div; reciprocal up to 4^10):
  comparisons with 4^j, j = -9..22, one layer, give the piece
  [4^j, 4^(j+1)) of x; m = x 4^-j in [1, 4) needs 4^-j >= 2^-18 (a
  constant) and a product below 2^26, so pieces beyond 4^9 are scaled from
  "tiers" x 2^-18 (j <= 18) and x 2^-36 (j <= 22), made by public products
  from x (0 below 2^-18: one select, the pieces' bits are ready by then;
  x - 2^44 on the top piece, so that no product reaches 2^26): three
  products in parallel, one per tier, each 0 off its pieces. Every
  piecewise constant is a select of public constants from the same bits.
- log: that reduction; degree-8 minimax q ~ 8 log m; q/8 + j ln 4.
  x < 2^-18 (x <= 0 in fixed point): log 2^-18 = -12.48.
- reciprocal: s = sign x and a = |x| (one comparison, one select: s x would
  be a truncated product); comparisons with 4^j, j = -9..10, give m = a 4^-j
  and f = s 4^-j / 16 up to 4^8 (4^-j/16 >= 2^-18); degree-12 minimax
  q ~ 16/m; f q. From 2^16 to 2^20, where 1/x is 4 units of 2^-18 or less,
  the middle of 1/x on each piece (2 and 1 units); from 2^20 on, 0.
  x = 0 gives 2^18 (the value at 2^-18).
- div(a, b): ``div_parts`` of b: the full-range reduction of |b| and
  reciprocal's core give 1/b = q sum_t g_t 2^(-18 t), g_t = sign(b) 4^-j 2^(18 t)
  / 16 on the one tier t (j <= 7 + 9t) where it is a multiple of 2^-18;
  ``divide``: sum_t ((a q) g_t) 2^(-18 t), the 2^-18 factors by public
  products after the quotient is formed, so small quotients keep their
  relative precision (a * reciprocal(b) would first round 1/b to a multiple
  of 2^-18). The numerator: a q must stay below 2^25, so |a| (one comparison,
  one select) from 2^21 on is scaled by 2^-18 and from 2^39 on by 2^-36
  (public products; from 2^44 as (|a| - 2^44) 2^-18 + 2^26; three comparisons
  in b's second layer) into a_s in [2^3, 2^21), and b's factors for that tier
  s are 4^-j 2^(18 (s + k)) / 16 on the output level k where they are a
  multiple of 2^-18 (``_divisor_factor``; five selects of ``div_parts``'
  tables by the tier bits): the quotient is formed at its own scale, as for
  a small a, so it keeps its relative precision whatever the magnitudes of a
  and b. A quotient from 2^25.5 on would pass the product bound 2^26: est =
  (a q) (H_0 2^-18), the level-0 quotient times 2^-18, is compared with
  +-2^7.5 (a third comparison layer) and there the quotient is formed as
  (a q) (H_0 2^-18) and doubled 18 times by additions (H_0 >= 1 there, as
  a q < 2^25, so H_0 2^-18 is exact). |err| <= 1.5e-5 |a/b| in float32 and
  <= 1.5e-5 |a/b| + 2^-17 (1 + 1/(4|b|)) in fixed point (measured on |a| up
  to 2^45, every |b| and |a/b| up to 2^43.9: 0.12 and 0.57 of that), for any
  |a| < 2^45 and |a/b| < 2^44 (beyond, the est product passes 2^26: it wraps
  and simulate's range sanitizer warns at the line). b = 0 gives 0.
  Narrowed (``lo``/``hi``): reciprocal's narrow reduction, 10 products, 12
  comparisons, |a| < 2^22. Cost of the full ranges: 16 products, 6
  comparisons and one comparison layer more than when |a| < 2^22 and
  |a/b| < 2^26 were required (28% more bytes, 48 rounds instead of 38 for
  a / b of 10^5 elements with a dealer).
- sqrt: the full-range reduction; degree-8 q ~ 16 sqrt(m); (2^j/16) q (from
  2^-13 to 2^18, all constants). x < 2^-18 (x <= 0): 0.
- rsqrt: as sqrt with q ~ 16/sqrt(m) and (2^-j/16) q up to 4^15; from 2^30
  on, where 1/sqrt(x) <= 8 units of 2^-18, the middle of 1/sqrt(x) on each
  piece. x < 2^-18 (x <= 0): 2^9, the value at 2^-18.
- ``lo``/``hi`` (log, reciprocal, div, sqrt, rsqrt) narrow the range to
  powers of 4 within [4^-8, 4^10] (reciprocal: 4^8) without tiers, one
  comparison per factor of 4; outside it, the value at the nearer end (sqrt
  below it: the chord 2^-L x). The narrow defaults before the full ranges
  were log [2^-10, 2^10], reciprocal [2^-8, 2^12], sqrt/rsqrt [2^-8, 2^14].
- logistic (sigmoid): s = sign x; a = min(|x|, 8.25) (x < 0, x < 8.25 and
  -x < 8.25 batched into one comparison layer; above 2^16 elements x < 0 then
  |x| < 8.25, two layers of fewer bytes); degree-8 minimax p ~ sigmoid(a) on [0, 8.25], fitted
  jointly with the saturation error and with p(0) = 1/2 exactly;
  1/2 + s (p - 1/2). So sigmoid(0) = 1/2, sigmoid(-x) = 1 - sigmoid(x)
  exactly, and it is continuous; for |x| > 8.25 it is constant:
  1 - 1.6e-4 above, 1.6e-4 below.
- tanh: the same with a = min(|x|, 4.125), p ~ tanh(a) with p(0) = 0,
  result s p: odd, tanh(0) = 0; saturates at +-(1 - 3.2e-4).
- erf: the same with a = min(|x|, 2.78125), p ~ erf(a) with p(0) = 0,
  result s p (odd); saturates at +-(1 - 1.6e-4). erfc is 1 - erf (so its
  relative error grows where erfc is small); jax.nn.gelu(approximate=False)
  uses it.
- atan: s = sign x, a = s x; reciprocal's reduction of a on [1, 4^9] (its
  first comparison, a >= 1, also picks the branch) gives 1/a; t = a below 1,
  1/a from 1 on; degree-15 odd minimax p(t) ~ atan(t) on [0, 1] (1.6e-6);
  s p, or s (pi/2 - p) from 1 on. Odd; |x| >= 2^18 gives s (pi/2 - 2^-18).
- atan2(y, x): |x| and |y| clamped to 2^18 (with the signs: six comparisons,
  one layer); t = min/max in [0, 1] by reciprocal's reduction of the max on
  [4^-9, 4^9] with the min scaled by the same 4^-j before the product by the
  core (so t keeps a few units of 2^-18 of error however small the max);
  atan's polynomial; the octant from |y| > |x| and the signs (one product
  after the polynomial). atan2(0, 0) = 0, atan2(0, x < 0) = pi (JAX's; there
  is no -0). Inputs beyond +-2^18 are clamped (the angle of the clamped
  pair); a max below 2^-18 (only in float32) gives t = 2^18 min.
- asin: a = |x|, z = 1 - a (exact); for a > 1/2, asin(a) =
  pi/2 - 2 asin(sqrt(z) / sqrt 2) with sqrt's method on [2^-18, 1], so near
  +-1, where asin is steep, the error is relative to the exact z; degree-7
  odd minimax on [0, 1/2] (7.6e-7). |x| > 1 gives +-pi/2 (JAX: NaN); float32
  inputs within 2^-18 of +-1 (none in fixed point) take sqrt's chord below
  its range: error up to 7e-4.
- acos: pi/2 - asin(x) (the constant cancels exactly where asin uses it):
  x > 1 gives 0, x < -1 gives pi.
- sinh: |x| < 2 (two comparisons): x P((x/2)^2), P degree-4 minimax
  (relative 3.8e-7; x is zeroed outside, one product); otherwise
  (e^x - e^-x)/2 from one exp of [x, -x] stacked, whose cancellation
  multiplies exp's error by at most coth 2 = 1.04 beyond 2. Odd, sinh(0) = 0;
  |x| > 12: +-(e^12 - e^-|x|)/2 = +-81377.4.
- cosh: (e^x + e^-x)/2 from one exp of [x, -x]; |x| > 12: 81377.4.
- asinh: s = sign x, a = s x, b = min(a, 256) (three comparisons, one
  layer); log(2a - b + sqrt(b^2 + 1)), which is log(a + sqrt(a^2 + 1)) up to
  256 and within a relative 1/(4 256^2) = 3.8e-6 of it above (b^2 stays
  below 2^16); sqrt on [1, 4^9], log on [1, 4^10], neither saturating below
  (their arguments are >= 1); s times that. Odd; |x| >= 2^19 gives
  +-log(2^20) = +-13.86.
- acosh: c = x clamped to [1, 256], d = c - 1 (exact); sqrt(x^2 - 1) =
  sqrt(d) sqrt(d + 2), the two reductions (d on [4^-9, 4^5], d + 2 on
  [1, 4^5]) sharing one evaluation of sqrt's core on both stacked, so near 1
  the error is relative to the exact d, not to a rounded x^2 - 1;
  log(2x - c + sqrt(d) sqrt(d + 2)) as asinh's. x < 1 gives 0 (JAX: NaN);
  x >= 2^19 gives 13.86; float32 inputs in (1, 1 + 2^-18) take sqrt's chord:
  error up to 7e-4.
- atanh: s = sign x, a = min(|x|, 1) (three comparisons, one layer);
  (log(1 + a) - log(1 - a)) / 2, log(1 - a) by log's reduction on
  [2^-18, 1] and 1 + a (in [1, 2]) straight into log's core, both on one
  evaluation; s times that. Odd. |x| >= 1 (and float32 inputs within 2^-18
  of it) give +-(log 2 + 18 log 2)/2 = +-6.59, the value at 1 - 2^-18
  (JAX: +-inf, then NaN).
- softmax: z = x - max(x) (exact; the max costs n-1 comparisons in
  ceil(log2 n) layers), e = exp(z) with only the low clamp (one comparison),
  s = sum(e) in [1, n]; reduction of s on [1, 4^H), 4^H >= 1.001 n, without
  saturation (H-1 comparisons: none for n <= 3, 4 for n = 1000); result
  (e q) f, not e (f q) -- 1/s alone would keep few bits. Depth 14 after
  the max. "prod" is per element, plus a few per row.
- log_softmax: z - log(sum exp z) with the log core on [1, 4^H). Depth 11
  after the max.

Periodic functions (not in the table: their error grows with |x|, so the tests
check them separately): sin and cos reduce exactly by the integer
k = floor(x / 2pi + 1/2) (an exact floor on XOR shares), u = x/pi - 2k in
about [-1, 1], then an odd degree-11 polynomial p(u) ~ sin(pi u) (error
6.2e-6 on |u| <= 1.06; 7 products, depth 6); cos(x) = sin(x + pi/2). The
18-bit constant 1/pi makes u off by up to |x| 2^-19, so the absolute error
is about 2e-5 + 2^-17 |x|: 1e-4 up to |x| = 10. tan is sin/cos by ``div``
with |cos| on [2^-8, 1] (both from one sin of [x, x + pi/2]): its error is
at most (2.5e-5 + 2^-17 |x|)(1 + |tan x|)/|cos x| (measured: 0.95 times
(2e-5 + ...) in fixed point) away from the poles; within 2^-8 of a pole
(|cos x| < 2^-8) the divisor saturates, so |tan| <= 256 (sign as the computed
cos). 22 products (two sin, div), depth 14, 6 comparisons (2 layers) and
two floors. sin, cos and tan keep every product below 2^26 for |x| <= 2^20
(beyond, u's error |x| 2^-19 passes 1 and the polynomial grows).

The softmax/log_softmax fxp figures are for stochastic truncation (the real
TruncPr): floor truncation biases every e_i the same way and the row error
then grows with n (2e-3 at n = 4096).

"rel" bounds mean ``|approx - f| <= max_err * |f|`` in float32, and
``<= max_err * |f| + FIXED_POINT_ATOL`` in 18-bit fixed point, whose outputs
have resolution 2^-18 (exp(x) for x < -12.5 is 0 or one unit; 1/4096 is 64
units); FIXED_POINT_ATOL = 2^-16 (four units). "abs" bounds hold as stated in
both. ``allowed_error(name, f_values, fixed_point)`` turns a bound into a per
element tolerance.

Fixed-point notes (f = 18; mixc's TruncPr needs every product below 2^26 in
magnitude before truncation, and adds up to one unit, 2^-18, unbiased):

- Inputs are clamped or range-reduced *before* any product that could grow,
  so every input with |x| < 2^25 (in particular [-2^15, 2^15]) keeps every
  product below 2^26 (the tests check it on [-2^15, 2^15]); no wrap-around,
  and no NaN/inf in float32. exp, log, reciprocal, sqrt and rsqrt do for
  every input the ring holds (|x| < 2^45; clamps and absolute values by
  selects, which have no truncation), and div for every a and b with
  |a/b| < 2^44 (the tests check these on every magnitude up to 2^45).
- exp: x/8 is rounded to 2^-18 and the 3 squarings multiply that error by 8:
  a relative error floor of ~8 * 2^-19 = 1.5e-5 whatever the polynomial.
- Polynomial cores compute s*f(m) with s = 8 or 16 so their outputs use more
  significant bits; the power-of-two factor s^-1 4^-j is folded into the
  final product. Sums of public-coefficient products are each truncated once
  per term; a fused "sum then truncate once" in the protocol would remove most
  of the remaining fixed-point error.
- reciprocal of large |x| is small and has few significant bits (1/4096 is
  64 units): prefer ``div`` (or multiply before the small factor, as softmax
  does) to ``a * reciprocal(b)``.
- The input itself is a multiple of 2^-18 (x = 2^-8 has only 10 significant
  bits); errors are against f at the encoded input.
- All constants are multiples of 2^-18, so float32 and the fixed-point
  encoding use the same numbers. With fewer fraction bits the constants are
  re-rounded and the bounds no longer apply as stated.

Costs: a secret x secret product is one round and ~40 bytes per element
(both masked operands opened both ways plus the dealer's correction), plus its
truncation round (~32 bytes), like every product by a public constant. A
select between public constants with a secret predicate is free after the
comparison (the bit times a constant); the range reductions use one
comparison per factor of 4 of range, all in one layer, shared by every
piecewise constant: narrowing ``lo``/``hi`` removes comparisons (e.g.
``reciprocal(x, lo=0.5, hi=64)``: 6 instead of 21). Polynomials use baby steps
t, t^2, t^3, t^4 and Horner in t^4 (degree 8: 4 products, depth 3; degree 12:
5 products, depth 4).

Polynomial coefficients are minimax (linear programming on a 4001-point grid)
in the evaluation variable t in [-1, 1] (exp: y = x/8 in [-2, 1.5], relative
weight; the odd atan and asin as polynomials in t^2 for t in [0, 1] and
[0, 1/2]; sinh's P in (x/2)^2 in [0, 1], relative weight), then rounded to
multiples of 2^-18 from the top degree down, refitting the lower coefficients
after each rounding.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

__all__ = ["exp", "log", "reciprocal", "div", "div_parts", "divide", "sqrt", "rsqrt",
           "rsqrt_parts", "sigmoid", "tanh", "erf", "sin", "cos", "tan", "atan", "atan2", "asin", "acos",
           "sinh", "cosh", "asinh", "acosh", "atanh",
           "softmax", "log_softmax", "APPROXIMATIONS", "BINARY_APPROXIMATIONS",
           "ERROR_BOUNDS", "RESOLUTION_FLOORS", "RESOLUTION_ERROR", "SOFTMAX_ERROR",
           "LOG_SOFTMAX_ERROR", "FIXED_POINT_ATOL", "allowed_error"]

FRACTION_BITS = 18
_SCALE = float(1 << FRACTION_BITS)
FIXED_POINT_ATOL = 2.0 ** -16


def _q(v: float) -> float:
    """``v`` rounded to a multiple of 2^-18 (exact in float32 for |v| < 64)."""
    return round(v * _SCALE) / _SCALE


def _dyadic(*numerators: int) -> tuple[float, ...]:
    return tuple(n / _SCALE for n in numerators)


# ---------------------------------------------------------------- coefficients
# Monomial coefficients (multiples of 2^-18) in the evaluation variable t.

# exp: P(y) ~ 8 e^y on y = x/8 in [-2, 1.5] (relative error 2.3e-6); the
# first squaring divides by 64. The factor 8 gives P three more significant
# bits in fixed point.
_EXP_COEFFS = _dyadic(2097151, 2097168, 1048607, 349478, 87294, 17495, 2980, 429, 38)
_EXP_OUT_SCALE = 8.0
_EXP_LO, _EXP_HI = -16.0, 12.0
_EXP_SQUARINGS = 3
# exp's full range: x in [11, 20) and [20, 30] are shifted down by 13 ln 2 once or twice
# into [1.99, 11.98], where the narrow exp keeps its relative error, and its result doubled
# 13 or 26 times; above 30 (e^30 = 2^43.3) it saturates.
_EXP_SHIFT_BITS = 13
_EXP_SHIFT = _q(_EXP_SHIFT_BITS * math.log(2.0))
_EXP_SHIFT_AT = (11.0, 20.0)
_EXP_MAX = 30.0

# sigmoid: p(t) ~ sigmoid(a), a = min(|x|, 8.25), t = a * q(2/8.25) - 1;
# p(-1) = 1/2 exactly (and tanh's p(-1) = 0).
_SIG_CLAMP = 8.25
_SIG_SCALE = _q(2.0 / _SIG_CLAMP)
_SIG_COEFFS = _dyadic(257933, 16843, -32216, 44208, -48718, 23579, 15765, -19115, 3823)

# tanh: p(t) ~ tanh(a), a = min(|x|, 4.125), t = a * q(2/4.125) - 1.
_TANH_CLAMP = 4.125
_TANH_SCALE = _q(2.0 / _TANH_CLAMP)
_TANH_COEFFS = _dyadic(253722, 33686, -64433, 88416, -97433, 47158, 31527, -38230, 7647)

# erf: p(t) ~ erf(a), a = min(|x|, 2.78125), t = a * q(2/2.78125) - 1 (fitted with p(0) = 0
# and the saturation error jointly; the clamp is where that error is smallest).
_ERF_CLAMP = 2.78125
_ERF_SCALE = _q(2.0 / _ERF_CLAMP)
_ERF_COEFFS = _dyadic(249247, 59395, -115308, 111225, -30085, -44492, 36293, 4923, -9096)

# [1, 4) cores: t = m * q(2/3) - q(5/3) in [-1, 1].
_M_SCALE = _q(2.0 / 3.0)
_M_SHIFT = _q(5.0 / 3.0)
# name: (coefficients, s) with the polynomial ~ s * f(m); s > 1 puts the
# output in [1, 4) or so, for more significant bits in fixed point.
_CORES = {
    "log": (_dyadic(1921584, 1258098, -376923, 153431, -71575, 24540, -8219, 17539, -11234), 8.0),
    "reciprocal": (_dyadic(1677724, -1006605, 603960, -363150, 217908, -124583, 74697, -65904,
                           39618, 11339, -6857, -23957, 14389), 16.0),
    "sqrt": (_dyadic(6631766, 1989481, -298191, 90180, -34974, 11869, -3484, 5611, -3667), 16.0),
    "rsqrt": (_dyadic(2652728, -795369, 357374, -184675, 99658, -32265, 13423, -36204, 22525),
              16.0),
}

# default ranges, as exponents of 4: [4^lo, 4^hi]
_LOG_RANGE = (-5, 5)        # [2^-10, 2^10]   ⊇ [1e-3, 1e3]
_RECIP_RANGE = (-4, 6)      # [2^-8, 2^12]
_SQRT_RANGE = (-4, 7)       # [2^-8, 2^14]    ⊇ [1e-2, 1e4]
# the defaults: every positive fixed-point value, [2^-18, 2^45) = [4^-9, 4^22.5)
_FULL_RANGE = (-9, 23)
_RING_MIN, _RING_TOP = 2.0 ** -18, 2.0 ** 45
_RECIP_FULL = (-9, 10)          # 1/x below 2^-20 from 4^10 on: 0
_RECIP_CONSTANT_FROM = 8        # from 4^8 = 2^16, 1/x < 2^-16: a constant per piece
_RSQRT_CONSTANT_FROM = 15       # from 4^15 = 2^30, 1/sqrt(x) <= 2^-15: likewise


# ---------------------------------------------------------------- building blocks

def _f32(x):
    return jnp.asarray(x, jnp.float32)


def _poly(t, coeffs):
    """sum_k coeffs[k] * t^k with few secret products at minimal depth.

    Baby steps t, t^2, t^3, t^4 (3 products, depth 2), then Horner in T = t^4
    over blocks of 4 coefficients (a lone top coefficient joins the block
    below as c_n * t^4). Degree 8: 4 products, depth 3; degree 12: 5, depth 4.
    """
    c = [float(v) for v in coeffs]
    n = len(c) - 1
    if n == 0:
        return jnp.zeros_like(t) + c[0]
    k = min(4, n)
    pw = {1: t}
    for j in range(2, k + 1):
        pw[j] = pw[j // 2] * pw[j - j // 2]

    def block(lo, hi):
        idx = [j for j in range(lo + 1, hi + 1) if c[j]]
        if len(idx) > 1:
            # One product with the public coefficient vector: a single truncation for
            # the block instead of one per term.
            powers = jnp.stack([pw[j - lo] for j in idx], axis=-1)
            acc = powers @ jnp.asarray([c[j] for j in idx], jnp.float32)
        elif idx:
            acc = c[idx[0]] * pw[idx[0] - lo]
        else:
            acc = jnp.zeros_like(t)
        return acc + c[lo] if c[lo] else acc

    blocks = [(s, min(s + k - 1, n)) for s in range(0, n + 1, k)]
    if len(blocks) > 1 and blocks[-1][0] == blocks[-1][1]:
        blocks.pop()
        blocks[-1] = (blocks[-1][0], n)
    acc = block(*blocks[-1])
    for b in reversed(blocks[:-1]):
        acc = block(*b) + pw[k] * acc
    return acc


def _sign(x):
    """+1 for x >= 0, -1 for x < 0 (one comparison; a select of public constants)."""
    return jnp.where(x < 0, -1.0, 1.0).astype(jnp.float32)


def _piecewise(bits, tables):
    """Piecewise-constant secrets from monotone threshold bits.

    ``bits[i]`` is "x >= threshold_i" for increasing thresholds, so region r
    (r = number of bits set) has value ``table[r]``; each table becomes
    table[0] + sum_i bits[i] * (table[i+1] - table[i]): selects between
    public constants, no secret product. Every bit is one comparison shared by
    all tables. A table with one value comes back as a Python float.
    """
    outs = []
    for table in tables:
        vals = [float(v) for v in table]
        if all(v == vals[0] for v in vals):
            outs.append(vals[0])
            continue
        # summed from the first region up, every partial sum is a table value, so float32
        # stays exact when the table spans more than its 24 bits (4^9 down to 4^-8)
        acc = vals[0] if vals[0] else None
        for b, prev, nxt in zip(bits, vals[:-1], vals[1:]):
            if nxt != prev:
                term = jnp.where(b, nxt - prev, 0.0).astype(jnp.float32)
                acc = term if acc is None else acc + term
        outs.append(acc)
    return outs


def _mul(a, b):
    """a * b, skipping products by the public constants 1 and 0 (a float is public)."""
    for public, other in ((b, a), (a, b)):
        if isinstance(public, float) and public in (0.0, 1.0):
            return other if public == 1.0 else 0.0
    return a * b


def _add(a, b):
    if isinstance(b, float) and b == 0.0:
        return a
    if isinstance(a, float) and a == 0.0:
        return b
    return a + b


def _log4_range(lo, hi, default, max_h=10):
    """(L, H) exponents of 4 covering [lo, hi] (lo/hi None -> default).

    L >= -8 and H <= max_h keep every piecewise constant (4^-j, and the
    output factors) an exact multiple of 2^-18.
    """
    if lo is None and hi is None:
        return default
    L, H = default
    if lo is not None:
        if not lo > 0:
            raise ValueError(f"lo must be positive, got {lo}")
        L = math.floor(math.log(lo, 4) + 1e-9)
    if hi is not None:
        H = math.ceil(math.log(hi, 4) - 1e-9)
    if not H > L:
        raise ValueError(f"empty range [{lo}, {hi}]")
    if L < -8 or H > max_h:
        raise ValueError(f"range [{lo}, {hi}] needs [4^{L}, 4^{H}]; 18-bit fixed point allows "
                         f"[4^-8, 4^{max_h}] here")
    return L, H


# A public product must stay below 2^26 and no fixed-point constant is below 2^-18, so a
# piece [4^j, 4^(j+1)) with j > 9 cannot be scaled to [1, 4) by one product: it is scaled
# from a "tier" a 2^-(18 t), t = 1 up to 4^19 and t = 2 up to the ring's top 2^45, made by
# public products (and the tier's scale 4^-j 2^(18 t) is then at least 2^-18).
_TIER_BITS = 18
_TIER_TOP = 22          # the last piece, [2^44, 2^45), held by the ring up to its sign bit


def _tier(j):
    """The tier whose scale 4^-j 2^(18 t) is a multiple of 2^-18: t = ceil((j - 9) / 9)."""
    return max(0, -(-(j - 9) // 9))


def _reduce4(a, L, H, *, saturate_lo=True, saturate_hi=True, nonpos_region=False,
             constant_from=None, nonnegative=False):
    """Range reduction of a secret a > 0 by powers of 4.

    Pieces j = L .. H-1 are [4^j, 4^(j+1)). Returns ``(m, tables)`` with
    m = a * 4^-j in [1, 4) on piece j, m = 1 below 4^L and m = 4 from 4^H on
    (when saturating; otherwise the first/last piece extends), and
    ``tables(spec, ...)`` making piecewise-constant secrets from the same
    comparisons, one per spec ``f_piece`` or ``(f_piece, below, above,
    nonpos)``: ``f_piece(j)`` on piece j, ``below`` under 4^L (default: piece
    L's value), ``above`` from 4^H (default: piece H-1's), and ``nonpos`` for
    a <= 0 (only with ``nonpos_region``; default: ``below``). Pieces from
    ``constant_from`` on are not scaled (m = 4 there: the caller's tables give the
    result). Pieces beyond 4^9 are scaled from tiers of public products (``_tier``), which
    needs the reduction to reach the ring's top (H = 23, no saturation above); their input
    is a select of 0 below 4^L (one product) unless the caller knows a is ``nonnegative``.

    Comparisons: one per threshold 4^(L+1) .. 4^(H-1), plus 4^L and 4^H when
    saturating, plus a > 0 with ``nonpos_region``; all on a, in one layer.
    """
    regions = []          # region descriptors in increasing order of a
    bits = []
    if nonpos_region:
        regions.append(("nonpos", None))
        bits.append(a > 0)
    if saturate_lo:
        regions.append(("below", None))
        bits.append(a >= float(4.0 ** L))
    for j in range(L, H):
        regions.append(("piece", j))
        if j > L:
            bits.append(a >= float(4.0 ** j))
    if saturate_hi:
        regions.append(("above", None))
        bits.append(a >= float(4.0 ** H))
    assert len(bits) == len(regions) - 1

    def region_table(f_piece, below=None, above=None, nonpos=None):
        below = f_piece(L) if below is None else below
        above = f_piece(H - 1) if above is None else above
        nonpos = below if nonpos is None else nonpos
        table = []
        for kind, j in regions:
            table.append({"nonpos": nonpos, "below": below, "above": above}.get(kind)
                         if kind != "piece" else f_piece(j))
        return table

    def tables(*specs):
        return _piecewise(bits, [region_table(*s) if isinstance(s, tuple) else region_table(s)
                                 for s in specs])

    scaled_to = H if constant_from is None else min(H, constant_from)
    tiers = sorted({_tier(j) for j in range(L, scaled_to)})
    if tiers[-1] > 0 and (H <= _TIER_TOP or saturate_hi or not (saturate_lo or nonnegative)):
        raise ValueError(f"pieces up to 4^{scaled_to - 1} need a reduction from a floor to "
                         f"4^{_TIER_TOP}")
    scales = tables(*[(lambda j, t=t: 4.0 ** -j * 2.0 ** (_TIER_BITS * t)
                       if j < scaled_to and _tier(j) == t else 0.0, 0.0, 0.0, 0.0)
                      for t in tiers])
    (offset,) = tables((lambda j: 0.0 if j < scaled_to else 4.0, 1.0, 4.0, 1.0))
    m, tiered = offset, [a]
    if tiers[-1] > 0:
        tier_input = a if nonnegative else jnp.where(bits[nonpos_region], a, 0.0)
        tiered += _tiers_of(tier_input, tiers[-1], tables)
    for y, scale in zip(tiered, scales):
        m = _add(m, _mul(y, scale))
    return m, tables


def _tiers_of(a, top, tables):
    """[a 2^-18, a 2^-36][: top] for 0 <= a < 2^45 by public products, exact but for their
    truncation. a 2^-18 is taken as (a - 2^44) 2^-18 + 2^26 on the top piece, so that no
    product's value reaches 2^26 (the top piece's bit is one of the reduction's
    comparisons)."""
    values = []
    if top >= 1:
        top_piece, top_tier = tables(
            lambda j: 4.0 ** _TIER_TOP if j >= _TIER_TOP else 0.0,
            lambda j: 4.0 ** _TIER_TOP * 2.0 ** -_TIER_BITS if j >= _TIER_TOP else 0.0)
        values.append((a - top_piece) * 2.0 ** -_TIER_BITS + top_tier)
    if top >= 2:
        values.append(values[0] * 2.0 ** -_TIER_BITS)
    return values


def _core(m, name):
    """(s * f(m) by its polynomial in t = m * q(2/3) - q(5/3), for m in [1, 4]; s)."""
    coeffs, s = _CORES[name]
    return _poly(m * _M_SCALE - _M_SHIFT, coeffs), s


# ---------------------------------------------------------------- exp

def _exp_core(y, c0):
    """e^y for y in [-16, 12] by the polynomial in y/8 with constant term c0 (0 zeroes it)
    and three squarings: 7 products, depth 6."""
    p = _poly(y * (1.0 / 2 ** _EXP_SQUARINGS), (0.0,) + tuple(_EXP_COEFFS[1:])) + c0
    z = (p * p) * (1.0 / _EXP_OUT_SCALE ** 2)
    for _ in range(_EXP_SQUARINGS - 1):
        z = z * z
    return z


def _exp_clamped(x, saturate_hi=True):
    """e^x on [-16, 12] with x < -16 -> exactly 0 and (if saturate_hi) x > 12 -> e^12.

    Below -16 the polynomial's argument and its constant term are both set to
    0 (selects of public constants and one product k*x), so P = 0 and the
    result is exactly 0 at no extra depth: no e^-16 floor that would add
    n * 1.1e-7 to a softmax denominator.
    """
    lo_b = x < _EXP_LO
    if saturate_hi:
        hi_b = x > _EXP_HI
        k = jnp.where(lo_b, 1.0, 0.0) + jnp.where(hi_b, 1.0, 0.0)
        xc = jnp.where(hi_b, _EXP_HI, 0.0) + (x - k * x)   # x, 0 below, 12 above
    else:
        k = jnp.where(lo_b, 1.0, 0.0)
        xc = x - k * x                                     # x, 0 below
    return _exp_core(xc, jnp.where(lo_b, 0.0, _EXP_COEFFS[0]))


def _doubled(z, times):
    """z 2^times by additions: exact, and free of the 2^26 bound of a truncated product."""
    for _ in range(times):
        z = z + z
    return z


def exp(x):
    """e^x: relative error <= 1.0e-4 on [-16, 30] (see the module table).

    Method: four comparisons of x in one layer (-16, 11, 20, 30) give the clamp of x to
    [-16, 30] (one select) and a region r in {0, 1, 2} (x < 11, [11, 20), from 20);
    the narrow exp below of x' = x - 13 r ln 2, which stays in [-16, 12], gives
    z = e^x'; e^x = z 2^(13 r) as z + [r >= 1] z (2^13 - 1) + [r = 2] z (2^26 - 2^13),
    the doublings by additions (exact) and the two terms selects (products without a
    truncation, so no 2^26 limit): 10 products, depth 8, for any input the ring holds.
    Outside: x < -16 gives exactly 0 (e^-16 = 1.1e-7 is below the 2^-18 resolution);
    x > 30 gives e^30 = 1.07e13 (2^43.3): the largest value kept, with room for a sum,
    below the ring's 2^45. Results above 2^26 = e^18.0 cannot be a factor of a
    fixed-point product (it would wrap; simulate's range sanitizer warns).
    """
    x = _f32(x)
    lo_b, mid_b, top_b, hi_b = (x < _EXP_LO, x >= _EXP_SHIFT_AT[0], x >= _EXP_SHIFT_AT[1],
                                x > _EXP_MAX)
    shift = jnp.where(mid_b, _EXP_SHIFT, 0.0) + jnp.where(top_b, _EXP_SHIFT, 0.0)
    # one select clamps x (lo_b and hi_b exclude each other: their XOR, local, is "outside");
    # k * x as in the narrow exp would be a truncated product, wrapping beyond 2^26
    xc = jnp.where(lo_b ^ hi_b, jnp.where(hi_b, _EXP_MAX, 0.0), x) - shift
    z = _exp_core(xc, jnp.where(lo_b, 0.0, _EXP_COEFFS[0]))
    step = _doubled(z, _EXP_SHIFT_BITS)
    # discarded terms stay below e^12 2^26 = 2^43.3: no intermediate leaves the ring
    return (z + jnp.where(mid_b, step - z, 0.0)
            + jnp.where(top_b, _doubled(step, _EXP_SHIFT_BITS) - step, 0.0))


# ---------------------------------------------------------------- log

_LN4 = math.log(4.0)


def log(x, *, lo=None, hi=None):
    """Natural log: absolute error <= 4.0e-5 on [2^-18, 2^45), every positive fixed-point
    value (see the module table).

    Method: comparisons of x against 4^j (j = -9..22, 32 comparisons, one layer) give
    m = x * 4^-j in [1, 4) (a select of x, 0 below 2^-18, then three products in
    parallel, one per tier of ``_reduce4``) and the offset j*ln 4 (free); a degree-8
    minimax polynomial gives 8 log(m) (depth 3), divided by 8. 8 products, depth 5
    (plus two public products before m for x >= 2^20). x < 2^-18 (x <= 0 in fixed
    point) gives log(2^-18) = -12.48.
    ``lo``/``hi`` (public floats) narrow the range, rounded out to powers of 4 within
    [4^-8, 4^10]: one comparison per factor of 4 (the default before the full range was
    [2^-10, 2^10], 11 comparisons), and outside it the value at the nearer end.
    """
    x = _f32(x)
    if lo is None and hi is None:
        return _log_pos(x, *_FULL_RANGE, saturate_hi=False)
    L, H = _log4_range(lo, hi, _LOG_RANGE)
    return _log_pos(x, L, H)


def _log_pos(x, L, H, **reduce_options):
    m, log_of = _log_reduce(x, L, H, **reduce_options)
    return log_of(_core(m, "log")[0])


def _log_reduce(x, L, H, **reduce_options):
    """(m, log_of): log(x) = log_of(q) for q the log core at m (left to the caller, so two
    logs can share one evaluation of the core on stacked arguments)."""
    m, tables = _reduce4(x, L, H, **reduce_options)
    # offset j*ln 4 rounded per region (error <= 2^-19); below 4^L: m = 1 and
    # piece L's offset; from 4^H: m = 4 and piece H-1's offset, i.e. H*ln 4.
    (off,) = tables(lambda j: _q(j * _LN4))
    _, scale = _CORES["log"]
    return m, lambda q: _add(_mul(q, 1.0 / scale), off)


# ---------------------------------------------------------------- reciprocal / div

def _abs(x):
    """(x < 0, |x|): one comparison and a select, exact for any |x| < 2^45 (sign(x) * x
    would be a truncated product, limited to 2^26)."""
    negative = x < 0
    return negative, jnp.where(negative, -x, x)


def _piece_middle(j, root):
    """The middle of f's values on piece j for f = x^(-1/root): f(4^(j+1)) to f(4^j),
    rounded to 2^-18 (within 2^-17 of f there from j = 8 (root 1) or 15 (root 2) on)."""
    top = 4.0 ** (-j / root)
    return _q((top + top * 4.0 ** (-1 / root)) / 2)


def reciprocal(x, *, lo=None, hi=None):
    """1/x: relative error <= 1.5e-5 for |x| in [2^-18, 2^16] (either sign); from 2^16 to
    the ring's top, where 1/x has at most 2 of 18 fraction bits, within 2^-17 of it.

    Method: s = sign(x) and a = |x| (one comparison, one select); comparisons of a
    against 4^j (j = -9..10, 20 comparisons, one layer) give m = a * 4^-j in [1, 4) and
    the factor f = s * 4^-j / 16 up to 4^8 (one product each); a degree-12 minimax
    polynomial q(m) ~ 16/m (5 products, depth 4); result f * q + s c, c the middle of
    1/x on [4^8, 4^9) and [4^9, 4^10) (2.5 and 0.625 units of 2^-18, rounded), 0 from
    4^10 on. 10 products, depth 7, 21 comparisons in 2 layers. x = 0 gives 2^18 (the
    value at 2^-18). ``lo``/``hi`` narrow the range of |x| (within [4^-8, 4^8], 1/|x| ->
    the value at the nearer end outside): one comparison less per factor of 4. In fixed
    point the result's resolution 2^-18 dominates for large |x| (1/4096 is 64 units; see
    FIXED_POINT_ATOL): for a quotient use ``div``, which keeps the relative precision.
    """
    x = _f32(x)
    negative, a = _abs(x)
    s = jnp.where(negative, -1.0, 1.0).astype(jnp.float32)
    if lo is None and hi is None:
        L, H = _RECIP_FULL
        m, tables = _reduce4(a, L, H, constant_from=_RECIP_CONSTANT_FROM)
        q, scale = _core(m, "reciprocal")
        f, c = tables((lambda j: 4.0 ** -j / scale if j < _RECIP_CONSTANT_FROM else 0.0,
                       None, 0.0), (lambda j: 0.0 if j < _RECIP_CONSTANT_FROM
                                    else _piece_middle(j, 1), None, 0.0))
        return _mul(s * f, q) + s * c
    L, H = _log4_range(lo, hi, _RECIP_RANGE, max_h=8)
    return _recip_pos(a, L, H, sign=s)


def _recip_parts(a, L, H, saturate_lo=True, saturate_hi=True):
    """(f, q) with 1/a ~ f * q: q = s/m in [1, s] by the polynomial, f = 4^-j / s."""
    m, tables = _reduce4(a, L, H, saturate_lo=saturate_lo, saturate_hi=saturate_hi)
    q, scale = _core(m, "reciprocal")
    (f,) = tables(lambda j: 4.0 ** -j / scale)
    return f, q


def _recip_pos(a, L, H, sign=None):
    f, q = _recip_parts(a, L, H)
    if sign is not None:
        f = _mul(sign, f)
    return _mul(f, q)


def div(a, b, *, lo=None, hi=None):
    """a / b: relative error <= 1.5e-5 of a/b, plus a few units of 2^-18 in fixed point,
    for |b| in [2^-18, 2^45), any |a| < 2^45 and |a/b| < 2^44 (``lo``/``hi``: a narrower
    range of |b|, as ``reciprocal``'s, |a| < 2^22 and |a/b| < 2^26).

    Method: ``div_parts`` of b gives 1/b = q sum_t g_t 2^(-18 t), q in [1, 16]; ``divide``
    brings |a| below 2^22 by public 2^-18 products (a "numerator tier" s, three
    comparisons) and multiplies a_s q by the factors of b shifted up by s tiers, so the
    quotient keeps its relative precision in fixed point however small (a * reciprocal(b)
    would first round 1/b: 1/4000 is only 66 units of 2^-18) and however large a is; a
    quotient from about 2^25.5 on (one more comparison layer) is formed 2^18 times smaller
    and doubled back. 32 products, depth 11, 39 comparisons in 3 layers; narrowed: as
    ``reciprocal`` plus one product. b = 0 gives 0 (JAX: inf or nan).
    """
    if lo is None and hi is None:
        return divide(a, div_parts(b))
    q, g = reciprocal_parts(b, lo=lo, hi=hi)
    return (_f32(a) * q) * g


# A numerator a_s times q (<= 16) stays below 2^25: |a| from 2^21 on is scaled by 2^-18
# (tier 1) and from 2^39 on by 2^-36 (tier 2), into [2^3, 2^21): 21 significant bits or more.
_NUMERATOR_TIER_AT = (21, 39)
_NUMERATOR_TIERS = len(_NUMERATOR_TIER_AT) + 1
# a divisor factor above this is only met by quotients beyond 2^44 (a_s q >= 2^5 from tier 1
# on): 0 there keeps every table value, and every select's difference, in the ring
_FACTOR_CAP = 2.0 ** 39
# A level-0 quotient from 2^25.5 on (est = a q H_0 2^-18 from 2^7.5) is formed as
# (a q) (H_0 2^-18) and doubled 18 times: H_0 >= 1 there (a q < 2^25), so H_0 2^-18 is exact,
# and below it a q H_0 stays under the product bound 2^26.
_LARGE_QUOTIENT_EST = 2.0 ** 7.5


def _divisor_factor(j, s, k):
    """The factor of piece j of |b| for numerator tier s on output level k (the result is
    sum_k (a_s q H_sk) 2^(-18 k)): 4^-j / 16 2^(18 (s + k)) on the one level k where it is a
    multiple of 2^-18 after the numerator's 2^(18 s) is folded in, else 0."""
    if max(_tier(j + 2) - s, 0) != k:
        return 0.0
    factor = 4.0 ** -j / 16.0 * 2.0 ** (_TIER_BITS * (s + k))
    return factor if factor <= _FACTOR_CAP else 0.0


_FACTOR_SLOTS = [(s, k) for s in range(_NUMERATOR_TIERS) for k in range(_NUMERATOR_TIERS - s)]


def div_parts(b):
    """(q, H_00, H_01, H_02, H_10, H_11, H_20) with 1/b = q sum_k H_0k 2^(-18 k) for |b| in
    [2^-18, 2^45): q in [1, 16] and H_sk = sign(b) 4^-j / 16 2^(18 (s + k)) public-valued,
    the factors for a numerator scaled by 2^(-18 s) (``_divisor_factor``; 0 for b = 0);
    ``divide`` applies them, so a divisor broadcast over many numerators is reduced once."""
    b = _f32(b)
    negative, a = _abs(b)
    m, tables = _reduce4(a, *_FULL_RANGE, saturate_hi=False, nonnegative=True)
    q, _ = _core(m, "reciprocal")
    h = jnp.stack(tables(*[(lambda j, s=s, k=k: _divisor_factor(j, s, k), 0.0)
                           for s, k in _FACTOR_SLOTS]))
    h = jnp.where(negative, -h, h)
    return (q, *[h[i] for i in range(len(_FACTOR_SLOTS))])


def _numerator_tiers(a):
    """(negative, a_s, [|a| >= 2^21, |a| >= 2^39]): a_s = |a| 2^(-18 s) below 2^21, s the
    numerator tier. |a| 2^-18 is taken as (|a| - 2^44) 2^-18 + 2^26 from 2^44 on, so that
    no product's value reaches 2^26."""
    negative, magnitude = _abs(_f32(a))
    tier_bits = [magnitude >= float(2.0 ** e) for e in _NUMERATOR_TIER_AT]
    top = magnitude >= float(4.0 ** _TIER_TOP)
    scaled = ((magnitude - jnp.where(top, 4.0 ** _TIER_TOP, 0.0)) * 2.0 ** -_TIER_BITS
              + jnp.where(top, 4.0 ** _TIER_TOP * 2.0 ** -_TIER_BITS, 0.0))
    # selects one after the other: f + p (t - f) is exact in the ring, but a sum of
    # differences of values 2^18 apart would round in float32
    a_s = jnp.where(tier_bits[0], scaled, magnitude)
    a_s = jnp.where(tier_bits[1], scaled * 2.0 ** -_TIER_BITS, a_s)
    return negative, a_s, tier_bits


def divide(a, parts):
    """a / b from ``div_parts(b)``: a_s q times the factors of b for a's tier s (selects of
    ``div_parts``' tables by a's tier bits), each output level scaled back by public 2^-18
    products; a level-0 quotient beyond 2^25.5 formed 2^18 times smaller and doubled."""
    q, *tables = parts
    factor = dict(zip(_FACTOR_SLOTS, tables))
    negative, a_s, tier_bits = _numerator_tiers(a)
    levels = []
    for k in range(_NUMERATOR_TIERS):
        h = factor[(0, k)]
        for s, bit in enumerate(tier_bits, start=1):
            h = jnp.where(bit, factor.get((s, k), 0.0), h)
        levels.append(h)
    aq = jnp.where(negative, -a_s, a_s) * q
    h0_low = levels[0] * 2.0 ** -_TIER_BITS
    est = aq * h0_low
    large = (est >= _LARGE_QUOTIENT_EST) ^ (est <= -_LARGE_QUOTIENT_EST)
    result = aq * levels[-1]
    for h in reversed(levels[1:-1]):
        result = aq * h + result * 2.0 ** -_TIER_BITS
    result = aq * jnp.where(large, h0_low, levels[0]) + result * 2.0 ** -_TIER_BITS
    # a select, not a sum of differences: exact in the ring and in float32 alike
    return jnp.where(large, _doubled(result, _TIER_BITS), result)


def reciprocal_parts(b, *, lo=None, hi=None):
    """(q, g) with 1/b = q * g, q in [1, 16] and g = sign(b) * 4^-j / 16 public-valued,
    for |b| in [2^-8, 2^12] (``lo``/``hi`` as ``reciprocal``'s; outside, as
    ``reciprocal``'s narrow saturation): ``div``'s two factors on a narrow range, so a
    divisor broadcast over many numerators is reduced once (``div_parts``: any |b|)."""
    b = _f32(b)
    L, H = _log4_range(lo, hi, _RECIP_RANGE, max_h=8)
    s = _sign(b)
    f, q = _recip_parts(s * b, L, H)
    return q, _mul(s, f)


# ---------------------------------------------------------------- sqrt / rsqrt

def sqrt(x, *, lo=None, hi=None):
    """sqrt(x): relative error <= 1.0e-5 on [2^-18, 2^45), every positive fixed-point
    value.

    Method: comparisons of x against 4^j (j = -9..22, 32 comparisons, one layer) give
    m = x * 4^-j in [1, 4) (as ``log``'s) and the factor 2^j / 16; a degree-8 minimax
    polynomial q(m) ~ 16 sqrt(m) (depth 3); result (2^j / 16) * q. 9 products, depth 6.
    x < 2^-18 (x <= 0 in fixed point) gives 0. ``lo``/``hi`` narrow the range within
    [4^-8, 4^10] (one comparison less per factor of 4): then 0 < x < 4^L gives the chord
    2^-L x (one product in parallel; with the old default [2^-8, 2^14], absolute error
    <= 2^-6 at 2^-10), x <= 0 gives 0 and x >= 4^H gives 2^H.
    """
    x = _f32(x)
    if lo is None and hi is None:
        m, root_of = _sqrt_reduce(x, *_FULL_RANGE, saturate_hi=False, chord=False)
    else:
        L, H = _log4_range(lo, hi, _SQRT_RANGE)
        m, root_of = _sqrt_reduce(x, L, H, nonpos_region=True)
    return root_of(_core(m, "sqrt")[0])


def _sqrt_reduce(x, L, H, chord=True, **reduce_options):
    """(m, root_of): sqrt(x) = root_of(q) for q the sqrt core at m (left to the caller, so
    two square roots can share one evaluation of the core on stacked arguments); with
    ``chord``, the chord 2^-L x in the region below 4^L (0 there otherwise); 0 for x <= 0
    with ``nonpos_region``."""
    m, tables = _reduce4(x, L, H, **reduce_options)
    _, scale = _CORES["sqrt"]
    f, g = tables((lambda j: 2.0 ** j / scale, 0.0, 2.0 ** (H - 1) / scale, 0.0),
                  (lambda j: 0.0, 2.0 ** -L if chord else 0.0, 0.0, 0.0))
    return m, lambda q: _add(_mul(f, q), _mul(g, x))


def rsqrt(x, *, lo=None, hi=None):
    """1/sqrt(x): relative error <= 3.0e-5 on [2^-18, 2^30]; from 2^30 to the ring's top,
    where it is below 2^-15 (8 units of 2^-18), within 2^-17 of it.

    Method as ``sqrt`` (32 comparisons, one layer) with a degree-8 minimax polynomial for
    16/sqrt(m) and the factor 2^-j / 16 up to 4^15; from there the middle of 1/sqrt(x)
    on each piece (rounded to 2^-18). 8 products, depth 6. x < 2^-18 (x <= 0 in fixed
    point) gives 2^9, the value at 2^-18. ``lo``/``hi`` narrow the range within
    [4^-8, 4^10] (one comparison less per factor of 4); outside, the value at the
    nearer end.
    """
    x = _f32(x)
    if lo is None and hi is None:
        m, tables = _reduce4(x, *_FULL_RANGE, saturate_hi=False,
                             constant_from=_RSQRT_CONSTANT_FROM)
        q, scale = _core(m, "rsqrt")
        f, c = tables(lambda j: 2.0 ** -j / scale if j < _RSQRT_CONSTANT_FROM else 0.0,
                      lambda j: 0.0 if j < _RSQRT_CONSTANT_FROM else _piece_middle(j, 2))
        return _add(_mul(f, q), c)
    q, g = rsqrt_parts(x, lo=lo, hi=hi)
    return _mul(g, q)


def rsqrt_parts(x, *, lo=None, hi=None, refine=False):
    """(q, g) with 1/sqrt(x) = q * g, q ~ 16/sqrt(m) in [8, 16] by the polynomial and
    g = 2^-j / 16 a power of two, on ``rsqrt``'s narrow range (``lo``/``hi``; default
    [2^-8, 2^14]; outside, the value at the nearer end): a vector scaled by 1/sqrt(x)
    keeps its relative precision when multiplied by q first, where the product g q
    would round a small 1/sqrt(x) to a multiple of 2^-18. ``refine``: one Newton step
    on the reduced m, q (3 - m q^2 / 256) / 2 (4 more products, depth 4), takes q g's
    relative error from 3e-5 to 2e-6 (what is left: m's own rounding to 2^-18)."""
    x = _f32(x)
    L, H = _log4_range(lo, hi, _SQRT_RANGE)
    m, tables = _reduce4(x, L, H)
    q, scale = _core(m, "rsqrt")
    if refine:  # q - q e / 2 with e = m q^2 / s^2 - 1 kept as s^2 e, a few units, not 2^-18 ones
        q = q - (q * ((m * q) * q - scale * scale)) * (0.5 / (scale * scale))
    (g,) = tables(lambda j: 2.0 ** -j / scale)
    return q, g


# ---------------------------------------------------------------- sigmoid / tanh

# Above this many elements a comparison's bytes outweigh its rounds and local work.
_WIDE = 1 << 16


def _odd_saturating(x, clamp, scale, coeffs):
    """sign(x) and p(min(|x|, clamp)). Narrow x: the three comparisons (x < 0, x < clamp,
    -x < clamp) are one batched comparison of 3|x| elements, so they cost one layer.
    Wide x: two comparisons of |x| elements (x < 0, then |x| < clamp), two layers and
    two thirds of the bytes."""
    if x.size > _WIDE:
        s = _sign(x)
        return s, _poly(jnp.minimum(s * x, clamp) * scale - 1.0, coeffs)
    bounds = jnp.asarray([0.0, clamp, clamp], jnp.float32).reshape((3,) + (1,) * x.ndim)
    below = jnp.stack([x, x, -x]) < bounds
    s = jnp.where(below[0], -1.0, 1.0).astype(jnp.float32)
    # |x| < clamp: both bits set (at least one always is), without an AND
    inside = jnp.where(below[1], 1.0, 0.0) + jnp.where(below[2], 1.0, 0.0) - 1.0
    a = clamp + inside * (s * x - clamp)
    return s, _poly(a * scale - 1.0, coeffs)


def sigmoid(x):
    """Logistic 1/(1+e^-x): absolute error <= 2.5e-4 on all of R.

    Method: s = sign(x), a = min(|x|, 8.25) (the three comparisons x < 0,
    x < 8.25 and -x < 8.25 batched into one), a degree-8 minimax polynomial
    p(a) ~ sigmoid(a) on [0, 8.25] fitted jointly with the saturation error and
    with p(0) = 1/2 exactly, result 1/2 + s * (p - 1/2): sigmoid(0) = 1/2 and
    sigmoid(-x) = 1 - sigmoid(x) exactly. 7 products, depth 6, 3 comparisons
    (1 layer; above 2^16 elements 2 comparisons in 2 layers, fewer bytes). Outside [-8.25, 8.25] it returns the constants
    p(8.25) = 1 - 1.6e-4 and 1 - p(8.25), within the bound of 1 and 0.
    """
    x = _f32(x)
    s, p = _odd_saturating(x, _SIG_CLAMP, _SIG_SCALE, _SIG_COEFFS)
    return 0.5 + s * (p - 0.5)


def tanh(x):
    """tanh: absolute error <= 4.0e-4 on all of R.

    Method as ``sigmoid``: s = sign(x), a = min(|x|, 4.125), degree-8
    minimax p(a) ~ tanh(a) with p(0) = 0, result s * p (odd, tanh(0) = 0).
    7 products, depth 6, 3 comparisons (1 layer). Saturates at
    +-p(4.125) = +-(1 - 3.2e-4).
    """
    x = _f32(x)
    s, p = _odd_saturating(x, _TANH_CLAMP, _TANH_SCALE, _TANH_COEFFS)
    return s * p


def erf(x):
    """Error function: absolute error <= 2.5e-4 on all of R.

    Method as ``tanh``: s = sign(x), a = min(|x|, 2.78125), degree-8 minimax
    p(a) ~ erf(a) with p(0) = 0, result s * p (odd, erf(0) = 0). 7 products,
    depth 6, 3 comparisons (1 layer). Saturates at +-p(2.78125) =
    +-(1 - 1.6e-4).
    """
    x = _f32(x)
    s, p = _odd_saturating(x, _ERF_CLAMP, _ERF_SCALE, _ERF_COEFFS)
    return s * p


_HALF_PI = _q(math.pi / 2)

# sin(pi u) ~ sum_k c_k u^(2k+1) on |u| <= 1.06 (numerators of 2^-18)
_SIN_COEFFS = _dyadic(823549, -1354669, 668394, -156735, 20991, -1531)


def sin(x):
    """sine: abs error about 2e-5 + 2^-17 |x| (see "Periodic functions" above)."""
    x = _f32(x)
    k = jnp.floor(x * _q(1 / (2 * math.pi)) + 0.5)
    u = x * _q(1 / math.pi) - 2.0 * k
    u2 = u * u
    p = jnp.zeros_like(u) + _SIN_COEFFS[-1]
    for c in reversed(_SIN_COEFFS[:-1]):
        p = p * u2 + c
    return p * u


def cos(x):
    """cosine as sin(x + pi/2)."""
    return sin(_f32(x) + _q(math.pi / 2))


def tan(x):
    """tangent: sin x / cos x by ``div`` (see "Periodic functions" above).

    sin and cos are one evaluation of ``sin`` on [x, x + pi/2] stacked. Within 2^-8 of a
    pole (|cos x| < 2^-8) the divisor saturates: |tan| <= 256, sign as the computed cos.
    """
    x = _f32(x)
    sin_cos = sin(jnp.stack((x, x + _HALF_PI)))
    return div(sin_cos[0], sin_cos[1], lo=2.0 ** -8, hi=1.0)


# ---------------------------------------------------------------- inverse trigonometric

# atan(t) ~ t P(t^2) on t in [0, 1] (error 1.6e-6).
_ATAN_COEFFS = _dyadic(262144, -87375, 52306, -36525, 25406, -14801, 5814, -1082)
_ATAN_H = 9          # 1/|x| by reciprocal's reduction on [1, 4^9]; beyond, 4^-9 (error < 2^-18)
_ATAN2_LIMIT = 4.0 ** 9      # atan2's inputs are clamped to +-2^18

# asin(w) ~ w P(w^2) on w in [0, 1/2] (error 7.6e-7).
_ASIN_COEFFS = _dyadic(262142, 43783, 18391, 17854)

# Reductions of 1 - |x| (asin, atanh) and x - 1 (acosh) start at 4^-9 = 2^-18, the
# smallest nonzero distance to 1 in fixed point (and the smallest threshold it can encode).
_NEAR_ONE_L = -9


def _odd_poly(t, coeffs):
    """sum_k coeffs[k] t^(2k+1): ``_poly`` in t^2 (one product more), times t."""
    return t * _poly(t * t, coeffs)


def _abs_clamped(x, limit):
    """(sign(x), min(|x|, limit)) from three comparisons on x in one layer and one product:
    the coefficient of x, +-1 inside and 0 outside, is a select of public constants."""
    over, under = x > limit, x < -limit
    s = _sign(x)
    k = s - jnp.where(over, 1.0, 0.0) + jnp.where(under, 1.0, 0.0)
    return s, k * x + (jnp.where(over, limit, 0.0) + jnp.where(under, limit, 0.0))


def _clamp(x, lo, hi):
    """x clamped to [lo, hi]: two comparisons in one layer, one product."""
    below, above = x < lo, x > hi
    outside = jnp.where(below, 1.0, 0.0) + jnp.where(above, 1.0, 0.0)
    return jnp.where(below, lo, 0.0) + jnp.where(above, hi, 0.0) + (x - outside * x)


def _unit_ratio(num, den, L, H, **reduce_options):
    """num / den in [0, 1] for 0 <= num <= den, den in [4^L, 4^H].

    Reciprocal's reduction of den (m = den 4^-j, q ~ 16/m), with num scaled by 4^-j
    *before* the product by q: num 4^-j <= m < 4, so the quotient's error stays a few units
    of 2^-18 however small den is (``div`` scales last, by 4^-j / 16, which would multiply
    the rounding of num q by up to 2^14). Below 4^L: num 4^-L (< 1).
    """
    m, tables = _reduce4(den, L, H, **reduce_options)
    q, scale = _core(m, "reciprocal")
    (g,) = tables(lambda j: 4.0 ** -j)
    return (num * g) * q * (1.0 / scale)


def atan(x):
    """arctangent: absolute error <= 2.5e-5 on all of R (see the module table).

    Method: s = sign(x), a = s x; reciprocal's reduction of a on [1, 4^9] (10 comparisons,
    one layer; the first, a >= 1, also picks the branch) gives 1/a; t = a below 1, 1/a
    from 1 on; a degree-15 odd minimax p(t) ~ atan(t) on [0, 1]; result s p, or
    s (pi/2 - p) from 1 on. 17 products, depth 13. Odd; |x| >= 2^18 gives
    s (pi/2 - 2^-18).
    """
    x = _f32(x)
    s = _sign(x)
    a = s * x
    m, tables = _reduce4(a, 0, _ATAN_H)
    q, scale = _core(m, "reciprocal")
    # f = 0 below 1, so f q is 1/a for a >= 1 and 0 below; two products by 0/1 values
    # rather than a + above_one (1/a - a), which loses 1/a to rounding in float32
    f, above_one = tables((lambda j: 4.0 ** -j / scale, 0.0), (lambda j: 1.0, 0.0))
    t = (1.0 - above_one) * a + f * q
    p = _odd_poly(t, _ATAN_COEFFS)
    s_above = s * above_one
    return s_above * _HALF_PI + (s - 2.0 * s_above) * p


def atan2(y, x):
    """atan2(y, x) in [-pi, pi]: absolute error <= 2.5e-5 for max(|x|, |y|) in
    [2^-18, 2^18], i.e. every nonzero fixed-point pair in that box.

    Method: signs and |x|, |y| clamped to 2^18 (six comparisons, one layer);
    t = min/max in [0, 1] by ``_unit_ratio`` (18 comparisons, one layer); atan's
    polynomial p(t); the octant from |y| > |x| (one comparison) and the signs, one
    product after p. 20 products, depth 14, 25 comparisons in 3 layers.
    atan2(0, 0) = 0 and atan2(0, x < 0) = pi, as JAX (fixed point has no -0). Inputs
    beyond +-2^18 are clamped (the angle of the clamped pair); a max below 2^-18 (only
    in float32) gives t = 2^18 min, in [0, 1].
    """
    y, x = _f32(y), _f32(x)
    sy, ay = _abs_clamped(y, _ATAN2_LIMIT)
    sx, ax = _abs_clamped(x, _ATAN2_LIMIT)
    swap = jnp.where(ay > ax, 1.0, 0.0)
    hi = ax + swap * (ay - ax)
    t = _unit_ratio(ax + ay - hi, hi, -9, 9, saturate_hi=False)
    p = _odd_poly(t, _ATAN_COEFFS)
    # angle = sy * (x < 0 ? pi - a1 : a1) with a1 = (swap ? pi/2 - p : p); with c = sy sx
    # and sy [x < 0] = (sy - c) / 2 this is (sy - c + c swap) pi/2 + c (1 - 2 swap) p
    c = sy * sx
    c_swap = c * swap
    return (sy - c + c_swap) * _HALF_PI + (c - 2.0 * c_swap) * p


def asin(x):
    """arcsine: absolute error <= 4.0e-5 on [-1, 1] in fixed point (float32: on
    |x| <= 1 - 2^-18 and at +-1).

    Method: s = sign(x), a = s x, z = 1 - a (exact); w = a for a <= 1/2, and for a > 1/2
    w = sqrt(z) / sqrt(2) (sqrt's method on [2^-18, 1]; its comparisons and a > 1/2 in
    one layer), as asin(a) = pi/2 - 2 asin(sqrt((1 - a) / 2)); a degree-7 odd minimax
    p(w) ~ asin(w) on [0, 1/2]; result s p or s (pi/2 - 2p). 15 products, depth 12.
    |x| > 1 gives +-pi/2 (JAX: NaN).
    """
    x = _f32(x)
    s = _sign(x)
    a = s * x
    z = 1.0 - a
    m, root_of = _sqrt_reduce(z, _NEAR_ONE_L, 0, saturate_hi=False, nonpos_region=True)
    near_one = jnp.where(z < 0.5, 1.0, 0.0)
    w = a + near_one * (root_of(_core(m, "sqrt")[0]) * _q(math.sqrt(0.5)) - a)
    p = _odd_poly(w, _ASIN_COEFFS)
    s_near = s * near_one
    return s_near * _HALF_PI + (s - 3.0 * s_near) * p


def acos(x):
    """arccosine as pi/2 - asin(x): absolute error <= 4.0e-5 where asin's holds; x > 1
    gives 0, x < -1 gives pi (JAX: NaN)."""
    return _HALF_PI - asin(x)


# ---------------------------------------------------------------- hyperbolic

# sinh(x) ~ x P((x/2)^2) on |x| < 2 (relative error 3.8e-7); with x itself the last
# factor, tiny x keep their relative precision (float32 too: (x/2)^2 may underflow).
_SINH_COEFFS = _dyadic(262144, 174762, 34959, 3312, 203)
_SINH_POLY_LIMIT = 2.0
# asinh/acosh: above this C, a + sqrt(a^2 +- 1) is taken as 2a - C + sqrt(C^2 +- 1)
# (relative error < 1/(4 C^2) = 3.8e-6), so no square passes 2^16.
_HYPERBOLIC_CLAMP = 256.0
_ACOSH_H = 5         # x - 1 and x + 1 below 4^5 after the clamp
_LOG_ARG_H = 10      # log's argument (about 2|x|) reduced on [1, 4^10]: |x| < 2^19


def _exp_pair(x):
    """(e^x, e^-x) from one narrow exp (saturating at e^12) of [x, -x] stacked: their sum
    and difference are halved by a truncated product, which e^x beyond e^18 would wrap."""
    e = _exp_clamped(jnp.stack((x, -x)))
    return e[0], e[1]


def sinh(x):
    """sinh: relative error <= 1.1e-4 on [-12, 12].

    Method: for |x| < 2 (two comparisons, one layer) x times a degree-4 minimax polynomial
    in (x/2)^2, with x zeroed outside (one product); beyond, (e^x - e^-x)/2 from one
    ``exp`` of [x, -x], whose cancellation multiplies exp's error by at most
    coth 2 = 1.04 there. 23 products (16 of them the exp pair), depth 8. Odd, sinh(0) = 0.
    |x| > 12 gives +-(e^12 - e^-|x|)/2 = +-81377.4.
    """
    x = _f32(x)
    e_pos, e_neg = _exp_pair(x)
    inside = (jnp.where(x < _SINH_POLY_LIMIT, 1.0, 0.0)
              + jnp.where(x > -_SINH_POLY_LIMIT, 1.0, 0.0) - 1.0)
    x_inside = inside * x
    half = x_inside * 0.5
    p = x_inside * _poly(half * half, _SINH_COEFFS)
    return p + (1.0 - inside) * ((e_pos - e_neg) * 0.5)


def cosh(x):
    """cosh: relative error <= 1.0e-4 on [-12, 12] (exp's: the sum does not cancel).

    Method: (e^x + e^-x)/2 from one ``exp`` of [x, -x]. 16 products, depth 7. Even.
    |x| > 12 gives (e^12 + e^-|x|)/2 = 81377.4.
    """
    e_pos, e_neg = _exp_pair(_f32(x))
    return (e_pos + e_neg) * 0.5


def asinh(x):
    """asinh: absolute error <= 5.0e-5 on [-2^19, 2^19].

    Method: s = sign(x), a = s x and b = min(a, 256) (three comparisons, one layer);
    s log(2a - b + sqrt(b^2 + 1)): log(a + sqrt(a^2 + 1)) up to 256, within a relative
    3.8e-6 of it above (sqrt on [1, 4^9], log on [1, 4^10]; both arguments are >= 1).
    15 products, depth 12, 21 comparisons in 3 layers. Odd; |x| >= 2^19 gives
    +-log(2^20) = +-13.86.
    """
    x = _f32(x)
    s, b = _abs_clamped(x, _HYPERBOLIC_CLAMP)
    a = s * x
    m, root_of = _sqrt_reduce(b * b + 1.0, 0, 9, saturate_lo=False, saturate_hi=False)
    arg = (a + a - b) + root_of(_core(m, "sqrt")[0])
    return s * _log_pos(arg, 0, _LOG_ARG_H, saturate_lo=False)


def acosh(x):
    """acosh: absolute error <= 6.0e-5 on [1, 2^19] in fixed point (float32: from
    1 + 2^-18 on, and at 1).

    Method: c = x clamped to [1, 256] (two comparisons, one layer), d = c - 1 (exact);
    sqrt(x^2 - 1) = sqrt(d) sqrt(d + 2) by sqrt's reductions of d (on [2^-18, 4^5]) and
    d + 2 (on [1, 4^5]) and one evaluation of its core on both, so near 1, where acosh
    is steep, the error is relative to the exact d, not to a rounded x^2 - 1;
    log(2x - c + sqrt(d) sqrt(d + 2)) as asinh's. 20 products, depth 11, 31 comparisons
    in 3 layers. x < 1 gives 0 (JAX: NaN); x >= 2^19 gives log(2^20) = 13.86.
    """
    x = _f32(x)
    c = _clamp(x, 1.0, _HYPERBOLIC_CLAMP)
    d = c - 1.0
    m_minus, root_minus = _sqrt_reduce(d, _NEAR_ONE_L, _ACOSH_H, saturate_hi=False)
    m_plus, root_plus = _sqrt_reduce(d + 2.0, 0, _ACOSH_H, saturate_lo=False,
                                     saturate_hi=False)
    q, _ = _core(jnp.stack((m_minus, m_plus)), "sqrt")
    arg = (x + x - c) + root_minus(q[0]) * root_plus(q[1])
    return _log_pos(arg, 0, _LOG_ARG_H)


def atanh(x):
    """atanh: absolute error <= 4.0e-5 on (-1, 1) in fixed point (float32: on
    |x| <= 1 - 2^-18).

    Method: s = sign(x) and a = min(|x|, 1) (three comparisons, one layer);
    s (log(1 + a) - log(1 - a)) / 2, log(1 - a) by log's reduction on [2^-18, 1] and
    1 + a (in [1, 2]) straight into log's core, one evaluation of the core for both.
    11 products, depth 6. Odd. |x| >= 1 gives +-(log 2 + 18 log 2)/2 = +-6.59, the value
    at 1 - 2^-18 (JAX: +-inf, then NaN).
    """
    x = _f32(x)
    s, a = _abs_clamped(x, 1.0)
    m, log_of = _log_reduce(1.0 - a, _NEAR_ONE_L, 0, saturate_hi=False)
    q, scale = _core(jnp.stack((1.0 + a, m)), "log")
    return s * ((q[0] * (1.0 / scale) - log_of(q[1])) * 0.5)


# ---------------------------------------------------------------- softmax

def _sum_range(n):
    """Exponent H with the row sum (in [1, n], plus approximation error) below 4^H."""
    H = max(1, math.ceil(math.log(n * 1.001, 4)))
    if H > 8:
        raise ValueError(f"softmax over {n} elements: rows up to 65000 are supported")
    return H


def softmax(x, axis=-1):
    """softmax along ``axis``: absolute error <= 1.0e-4 per element.

    z = x - max(x) <= 0 (exact); e = exp(z) with only the low clamp (one
    comparison); s = sum(e) in [1, n]; the reciprocal's reduction of s on
    [1, 4^H), 4^H >= 1.001 n, without saturation (H - 1 comparisons) gives
    1/s = f * q; result (e * q) * f (1/s alone would keep only ~18 - log2 n
    bits in fixed point). Depth 14 after the max. Any logits; the bound is
    checked for rows of up to 4096 (longer rows get one more comparison per
    factor of 4 and a growing rounding error).
    """
    x = _f32(x)
    z = x - jnp.max(x, axis=axis, keepdims=True)
    e = _exp_clamped(z, saturate_hi=False)
    s = jnp.sum(e, axis=axis, keepdims=True)
    n = x.shape[axis] if x.ndim else 1
    f, q = _recip_parts(s, 0, _sum_range(n), saturate_lo=False, saturate_hi=False)
    # (e * q) * f, not e * (f * q): f * q = 1/s is as small as 1/n and would
    # keep only ~log2(2^18 / n) significant bits in fixed point.
    return _mul(e * q, f)


def log_softmax(x, axis=-1):
    """log softmax along ``axis``: absolute error <= 1.5e-4 per element.

    z - log(sum(exp(z))) with z = x - max(x); the log of the sum uses the log
    core on [1, 4^H) without saturation (H - 1 comparisons). Depth 11 after
    the max. (In float32, x - max(x) itself rounds for huge logits.)
    """
    x = _f32(x)
    z = x - jnp.max(x, axis=axis, keepdims=True)
    e = _exp_clamped(z, saturate_hi=False)
    s = jnp.sum(e, axis=axis, keepdims=True)
    n = x.shape[axis] if x.ndim else 1
    return z - _log_pos(s, 0, _sum_range(n), saturate_lo=False, saturate_hi=False)


# ---------------------------------------------------------------- registry

APPROXIMATIONS = {
    "exp": exp,
    "log": log,
    "logistic": sigmoid,
    "tanh": tanh,
    "erf": erf,
    "sqrt": sqrt,
    "rsqrt": rsqrt,
    "reciprocal": reciprocal,
    "atan": atan,
    "asin": asin,
    "acos": acos,
    "sinh": sinh,
    "cosh": cosh,
    "asinh": asinh,
    "acosh": acosh,
    "atanh": atanh,
}
"""Unary approximations keyed by JAX primitive name ("reciprocal": 1/x)."""

BINARY_APPROXIMATIONS = {"div": div, "atan2": atan2}
"""``div`` with a secret divisor, and atan2."""

ERROR_BOUNDS = {
    # name: (lo, hi, max_err, kind) -- kind "abs" or "rel" (see the module docstring:
    # "rel" in fixed point allows FIXED_POINT_ATOL on top)
    "exp": (_EXP_LO, _EXP_MAX, 1.0e-4, "rel"),
    "log": (_RING_MIN, _RING_TOP, 4.0e-5, "abs"),
    "logistic": (-2.0 ** 15, 2.0 ** 15, 2.5e-4, "abs"),   # holds on all of R
    "tanh": (-2.0 ** 15, 2.0 ** 15, 4.0e-4, "abs"),       # holds on all of R
    "erf": (-2.0 ** 15, 2.0 ** 15, 2.5e-4, "abs"),        # holds on all of R
    # the ranges end below _RING_TOP = 2^45, the first value fixed point cannot hold
    "sqrt": (_RING_MIN, _RING_TOP, 1.0e-5, "rel"),
    "rsqrt": (_RING_MIN, _RING_TOP, 3.0e-5, "rel"),       # see RESOLUTION_FLOORS
    "reciprocal": (_RING_MIN, _RING_TOP, 1.5e-5, "rel"),  # and -x; see RESOLUTION_FLOORS
    "atan": (-2.0 ** 15, 2.0 ** 15, 2.5e-5, "abs"),       # holds on all of R
    # asin, acos, atanh: every fixed-point value in (-1, 1); float32 inputs closer to +-1
    # are below their reductions of 1 - |x|
    "asin": (-1.0 + 2.0 ** -18, 1.0 - 2.0 ** -18, 4.0e-5, "abs"),
    "acos": (-1.0 + 2.0 ** -18, 1.0 - 2.0 ** -18, 4.0e-5, "abs"),
    "sinh": (-12.0, 12.0, 1.1e-4, "rel"),
    "cosh": (-12.0, 12.0, 1.0e-4, "rel"),
    "asinh": (-2.0 ** 19, 2.0 ** 19, 5.0e-5, "abs"),
    "acosh": (1.0 + 2.0 ** -18, 2.0 ** 19, 6.0e-5, "abs"),
    "atanh": (-1.0 + 2.0 ** -18, 1.0 - 2.0 ** -18, 4.0e-5, "abs"),
}

RESOLUTION_FLOORS = {"reciprocal": 2.0 ** -16, "rsqrt": 2.0 ** -15}
"""Results at or below these magnitudes (at most 2 or 3 of the 18 fraction bits) are a
rounded constant per factor of 4 of x, within RESOLUTION_ERROR of the function, in float32
as in fixed point; the relative bound holds above."""
RESOLUTION_ERROR = 2.0 ** -17

SOFTMAX_ERROR = 1.0e-4
LOG_SOFTMAX_ERROR = 1.5e-4


def allowed_error(name, reference, fixed_point=False):
    """Per-element error allowed by ``ERROR_BOUNDS[name]`` (and ``RESOLUTION_FLOORS``) at
    true values ``reference``."""
    _, _, err, kind = ERROR_BOUNDS[name]
    ref = np.abs(np.asarray(reference, np.float64))
    bound = err * ref if kind == "rel" else np.full_like(ref, err)
    if name in RESOLUTION_FLOORS:
        bound = np.where(ref <= RESOLUTION_FLOORS[name], RESOLUTION_ERROR, bound)
    return bound + FIXED_POINT_ATOL if (fixed_point and kind == "rel") else bound
