"""Additively homomorphic RLWE encryption (BFV-style) over the plaintext ring Z_2^64 (or Z_2^128).

The heavy loops (NTT, RNS arithmetic, sampling, encoding, modulus switching,
bit packing) are the C kernels of ``csrc/he.c``; the modules below hold the
scheme, the noise accounting, the packings and the wire format.  Numpy
references for the kernels are in ``mixc.runtime.he_ref``.

Parameters (``DEFAULT``)
------------------------
* Ring R = Z[X]/(X^n + 1), **n = 8192**.
* Ciphertext modulus q = p0 p1 p2 p3 p4, five NTT-friendly primes
  (p = 1 mod 2n) of 42, 42, 45, 45 and 44 bits: **log2 q = 217.9999996**
  (q < 2^218).  Primes below 2^50 so the NTT and products run on AVX-512 IFMA
  (52-bit lanes); each limb is a separate 8192-point negacyclic NTT.
* Plaintext modulus **t = 2^64**: a plaintext is a polynomial with Z_2^64
  coefficients (coefficient encoding), i.e. n shares of the MPC ring.
* Secret: uniform ternary {-1, 0, 1}; errors: centred binomial with
  eta = 21 (sigma = sqrt(10.5) = 3.24 >= the standard's 3.19, |e| <= 21), as
  in SEAL.  All randomness comes from ``mixc.runtime.kernels.Prg`` (ChaCha20).
* **Security: >= 128 bits classical**, by the HomomorphicEncryption.org
  Security Standard (Albrecht et al., Nov 2018), table for ternary secrets
  and sigma ~ 3.2 at 128-bit classical security: n = 8192 -> log q <= 218
  (the same numbers as SEAL's ``seal_he_std_parms_128_tc``).  ``HEParams``
  checks every parameter set against that table and refuses insecure ones
  unless built with ``insecure_ok=True`` (tests of the NTT at tiny n).

Why these sizes.  Multiplying an encryption of x (coefficients in Z_2^64)
by a plaintext polynomial w with arbitrary Z_2^64 coefficients must give
x * w mod (2^64, X^n + 1) *exactly*, so nothing can be split into small
digits: the noise grows by ||w||_1 <= n 2^63 = 2^76.  Decryption needs
|noise| < q / (2t), and before a result goes back to the key owner it is
flooded with 2^40 * r times its noise (r = revealed coefficients, <= 2^13).
A fresh secret-key encryption (noise <= 21.5) times w then flooded needs
  2^4.4 (fresh) * 2^76 (||w||_1) * 2^3.7 (13 summed blocks) * 2^53 (flood)
  * 2^65 (t, 1/2) * 2 (margin) ~= 2^203 <= q ~ 2^218,
which rules out n = 4096 (log q <= 109) and needs four-plus primes at
n = 8192.  Splitting w into 16-bit limbs would fit n = 4096 only without
flooding and with 4x the products, so we use the large modulus instead.

Plaintext modulus 2^128 (``DEFAULT_128``, ``HEParams.t_bits = 128``)
--------------------------------------------------------------------
For the u128 MPC ring (``ring: 128``) the same scheme runs with t = 2^128:
plaintexts are ``U128`` arrays (two uint64 words, low first, as the ring's),
encoded as round(q m / 2^128) (``mixc_he_encode_scaled128``), decoded as
round(2^128 v / q) mod 2^128 (``mixc_he_decode128``, a 256-bit fixed-point CRT
sum), plaintext polynomials lifted to (-2^127, 2^127] (``mixc_he_from_i128``).
A product by w with 127-bit coefficients grows the noise by ||w||_1 <=
n 2^127, so the same budget as above needs
  2^4.4 (fresh) * 2^141 (||w||_1, n = 2^14) * 2^54 (flood, r <= 2^14)
  * 2^130 (t / 2, the budget's half) * margin ~= 2^334:
too much for n = 8192 (log q <= 218), so **n = 16384** with seven 50-bit
primes (log2 q = 350 <= 438 of the HE standard: 128-bit secure; IFMA NTTs),
flooding of up to 256 bits (``mixc_he_sample_wide``), and results switched
down to ``keep`` = 3 primes (150 bits > 128 + 2 + log2 n + 1).  Everything
else -- sanitisation, flooding size from public bounds only, the packings, the
wire format (its params id carries t) -- is unchanged.  Cost per result
coefficient vs t = 2^64: seeded input 716 868 B per 16384 coefficients
(43.8 B vs 27.3 B per coefficient), extracted output with r results
307 236 + 20.75 r B (2-byte position + 150 bits); a 1024 x 1024 masked
matrix product sends 1.9x the bytes and took 1.7x the time of the 64-bit one
(simulated, dealer-free device; tests: ``tests/test_ring128_he.py``).
(Splitting 128-bit words into 64-bit limbs on t = 2^64 would not be cheaper:
the low limbs' product a_lo w_lo needs its full 128 bits, which t = 2^64
loses, so it needs smaller limbs again plus carries.)

Encoding.  m in Z_2^64[X] is encoded as round(q m / t) (not floor(q/t) m):
with that scaling a product by any w in Z[X] keeps the message exactly
(q/t (m w) = q/t [m w]_t + q K == q/t [m w]_t mod q) and the noise becomes
e * w with no q mod t cross term, and modulus switching maps the message
part q m / t to q' m / t exactly.  Decryption computes
round(t (c0 + c1 s) / q) mod t with a CRT-free fixed-point sum
(``mixc_he_decode``).

Noise budget check
------------------
Every ciphertext carries ``noise``: a worst-case bound on |c0 + c1 s - q m/t|
(infinity norm, integer units), updated by every operation: fresh secret-key
encryption eta + 1/2; public-key encryption eta (2n + 1) + 1/2;
add: sum; add_plain: + 1/2; mul_plain(w): times ||w||_1; flooding: + F;
dropping a prime p: / p + (n + 1)/2.  Each operation that would push the bound
above the budget q / 2^66 (half of the decryption bound q / (2t)) raises
``HEError`` before producing anything.  Decryption also *measures* the noise
(the rounding residual of every coefficient) and raises ``HEError`` if it
exceeds the ciphertext's bound: this catches a wrong key (residuals are then
uniform: every coefficient of a fresh ciphertext fails the check with
probability 1 - 2^-59, each revealed coefficient of a sanitised result, whose
flooded noise fills ~2^-8 of the range, with probability ~1 - 2^-7) or a
corrupted ciphertext, instead of returning garbage.  A key
id (public, from the public key's seed) in every ciphertext makes a key
mix-up fail even earlier with a clear message.

Packings (coefficient encoding, as in Cheetah)
----------------------------------------------
*Matrix product* ``W (M x K, plaintext) . X (K x N, encrypted)`` and the
matrix-vector case N = 1 (``plan_matvec``).  Block sizes (mw, kw, nw) with
mw kw nw <= n: an input ciphertext holds a kw x nw block of X with X[j, l] at
coefficient j + l kw; a plaintext polynomial holds an mw x kw block of W with
W[i, j] at (kw - 1 - j) + i kw nw (rows reversed); their product has

    coefficient (kw - 1) + l kw + i kw nw  =  sum_j W[i, j] X[j, l]

and no other term lands on those coefficients (a cross term W[i, j'] X[j, l]
lands at offset j - j' from a result, |j - j'| < kw, and the negacyclic
wrap-around only reaches coefficients < kw - 1).  One ciphertext product
yields mw nw inner products of length kw; K is split into ceil(K / kw)
blocks whose products are summed in the NTT domain.  Counts: inputs
ceil(K/kw) ceil(N/nw), plaintext NTTs ceil(M/mw) ceil(K/kw), products
ceil(M/mw) ceil(K/kw) ceil(N/nw), outputs ceil(M/mw) ceil(N/nw).
``plan_matmul`` picks (mw, kw, nw) to minimise estimated compute time plus
bytes / bandwidth (default 1 Gbit/s).  E.g. 128 x 784 at n = 8192: kw = 262,
mw = 26: 3 input and 5 output ciphertexts, 15 products; 512 x 512: kw = 128,
mw = 64: 4 inputs, 8 outputs, 32 products.

*Elementwise* product x (encrypted) * y (plaintext) over Z_2^64: Z_2^64[X] /
(X^n + 1) has no CRT slots, and a coefficient packing with a unique-sum
position for every x_i y_i needs |S| |T| <= n, so one ciphertext product
yields d = floor(sqrt(n)) = 90 elementwise products: x_i at coefficient i,
y_i at i d, result at i (d + 1).  Cost per 90 elements: one input
ciphertext, one plaintext NTT, one product, one output (~1/90 of a dense
ciphertext's efficiency; use OT-based multiplication when elementwise
volume dominates).

Sanitisation (``mask_and_extract``)
-----------------------------------
Before a result ciphertext goes back to the key owner the evaluator
(1) adds the mask (e.g. -s for additive shares, b - s in the patent's
protocol) at the result coefficients; (2) re-randomises with a fresh
public-key encryption of zero (c1 becomes c1 w + a u + e2, an RLWE sample
in the fresh u: pseudorandom and independent of w); (3) floods the noise of
the r revealed coefficients with a uniform integer in [-F, F),
F = 2^ceil(log2(r B) + 40) >= 2^40 r B where B bounds everything else in the
noise (e w, e u, e1, e2 s), so by the smudging lemma the statistical distance
from a simulated result is <= 2^-40; (4) switches the modulus down to the
first ``keep`` = 2 primes (84 bits; rounding adds <= (n + 1)/2 noise); and
(5) sends only c1 and the r needed coefficients of c0 (the others are never
sent, so they reveal nothing).  The key owner thus learns only the masked
values.  The noise bound B (hence the flooding size and the noise field in
the header) must depend on public data only: the plans bound ||w||_1 by
(number of plaintext coefficients) * 2^63 instead of the exact norm of the
evaluator's weights.

Wire format
-----------
Header (36 bytes): b"MXHE", version, kind, level, flags, params id (8),
key id (8), noise bound (float64), length (uint32); then residues bit-packed
limb by limb at bits(p_i) bits each (218 bits per coefficient at full level).
Kinds: 0 full ciphertext (2 polys), 1 seeded (secret-key encryption: c0 and
the 32-byte seed of c1 = a, half size), 2 extracted (c1 at ``keep`` limbs +
positions (uint16) + c0 at those positions), 3 public key (b + seed of a).
Sizes at n = 8192: seeded 223 300 B, full 446 500 B, public key 223 300 B,
extracted with r results 86 052 + 12.5 r B (2-byte position + 2 x 42 bits).

Modules: ``he_params`` (parameters, NTT contexts, checks), ``he_wire`` (keys,
ciphertexts, wire format), ``he_eval`` (encryption, decryption, homomorphic ops),
``he_packing`` (matrix and elementwise packings); this one re-exports them.
"""

from __future__ import annotations

from mixc.runtime.kernels import ffi, lib  # noqa: F401 - tests call kernels via he
from mixc.runtime.he_params import (HEError, MASK64, T_BITS, STD_128_TERNARY, DEFAULT_PRIMES,
                                    _HDR, KIND_FULL, KIND_SEEDED, KIND_EXTRACTED, KIND_PUBKEY,
                                    HEParams, DEFAULT, DEFAULT_128, PRIMES_128, params_for,
                                    _p64, _ctx, ntt_forward, ntt_inverse, _pad)
from mixc.runtime.he_wire import (_pack_limbs, SecretKey, PublicKey, keygen, Plaintext,
                                  encode_plain, Ciphertext, ExtractedCiphertext,
                                  ciphertext_bytes, from_bytes)
from mixc.runtime.he_eval import (encrypt, decrypt, add, sub, neg, add_plain, mul_plain,
                                  mod_switch, mask_and_extract)
from mixc.runtime.he_packing import (DEFAULT_BANDWIDTH, MatmulPlan, plan_matmul, plan_matvec,
                                     ElementwisePlan, plan_elementwise, encrypt_input,
                                     evaluate, evaluate_masked, decrypt_output, matmul, matvec,
                                     elementwise)


__all__ = [
    "HEError",
    "HEParams",
    "DEFAULT",
    "DEFAULT_128",
    "params_for",
    "SecretKey",
    "PublicKey",
    "Plaintext",
    "Ciphertext",
    "ExtractedCiphertext",
    "keygen",
    "encrypt",
    "decrypt",
    "add",
    "sub",
    "neg",
    "add_plain",
    "encode_plain",
    "mul_plain",
    "mod_switch",
    "mask_and_extract",
    "from_bytes",
    "ciphertext_bytes",
    "MatmulPlan",
    "ElementwisePlan",
    "plan_matmul",
    "plan_matvec",
    "plan_elementwise",
    "encrypt_input",
    "evaluate",
    "evaluate_masked",
    "decrypt_output",
    "matmul",
    "matvec",
    "elementwise",
    "ntt_forward",
    "ntt_inverse",
]

