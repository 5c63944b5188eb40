"""The packings of ``runtime.he``: matrix products (``MatmulPlan``, Cheetah-style
coefficient encoding) and elementwise products (``ElementwisePlan``), their plans and
the encrypt / evaluate / decrypt steps around them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mixc.runtime.kernels import Prg
from mixc.runtime.he_params import (DEFAULT, HEError, HEParams, _check_budget,
                                    _check_plain, _ctx, _pad)
from mixc.runtime.he_wire import (Ciphertext, ExtractedCiphertext, PublicKey, SecretKey,
                                  ciphertext_bytes)
from mixc.runtime.he_eval import (decrypt, encrypt, mask_and_extract)


# --------------------------------------------------------------------------
# packings: matrix products and elementwise products
# --------------------------------------------------------------------------

# rough single-core costs (seconds) of the pieces, for plan selection,
# measured on the AVX-512 IFMA build at n = 8192, 5 primes (2-core EPYC); other
# parameter sets scale them by n L (``_work``)
_COST_NTT = 1.3e-4     # encode + 5-limb NTT of one plaintext block (evaluator)
_COST_MUL = 4.5e-5     # one two-component multiply-accumulate (evaluator)
_COST_OUT = 8.5e-4     # mask_and_extract + (de)serialise + decrypt of one output
_COST_IN = 8.5e-4      # encrypt + (de)serialise one input (key owner + evaluator)
DEFAULT_BANDWIDTH = 125e6  # bytes / s (1 Gbit/s)


def _cdiv(a, b):
    return -(-a // b)


def _work(params):
    """Work per ciphertext operation relative to the default parameters (n L)."""
    return params.n * params.L / (DEFAULT.n * DEFAULT.L)


def _max_entry(params):
    """The largest centred plaintext coefficient, t / 2: public bounds on ||w||_1 use it."""
    return 2.0 ** (params.t_bits - 1)


@dataclass(frozen=True)
class MatmulPlan:
    """Packing of W (M x K, plaintext) . X (K x N, encrypted) into blocks of
    mw x kw x nw (mw kw nw <= n).  Input ciphertext (bk, bn) is number
    bk * Nb + bn; output (bi, bn) is bi * Nb + bn."""

    M: int
    K: int
    N: int
    mw: int
    kw: int
    nw: int
    params: HEParams = DEFAULT
    vector: bool = False  # X / result given as vectors (N = 1)

    @property
    def Mb(self):
        return _cdiv(self.M, self.mw)

    @property
    def Kb(self):
        return _cdiv(self.K, self.kw)

    @property
    def Nb(self):
        return _cdiv(self.N, self.nw)

    @property
    def n_inputs(self):
        return self.Kb * self.Nb

    @property
    def n_outputs(self):
        return self.Mb * self.Nb

    @property
    def n_products(self):
        return self.Mb * self.Kb * self.Nb

    def _x(self, X):
        X = _check_plain(X, self.params, "matmul")
        if self.vector and X.ndim == 1:
            X = X.reshape(-1, 1)
        if X.shape != (self.K, self.N):
            raise ValueError(f"matmul: X must have shape {(self.K, self.N)}, got {X.shape}")
        return X

    def input_polys(self, X):
        """Coefficient vectors of the input ciphertexts (X[j, l] at j + l kw)."""
        X = self._x(X)
        n, kw, nw = self.params.n, self.kw, self.nw
        out = []
        for bk in range(self.Kb):
            for bn in range(self.Nb):
                blk = X[bk * kw:(bk + 1) * kw, bn * nw:(bn + 1) * nw]
                kj, nl = blk.shape
                poly = np.zeros(n, dtype=self.params.plain_dtype)
                idx = np.arange(kj)[:, None] + (np.arange(nl) * kw)[None, :]
                poly[idx] = blk
                out.append(poly)
        return out

    def weight_poly(self, W, bi, bk):
        """W block (bi, bk) as plaintext coefficients, W[i, j] at (kw-1-j) + i kw nw."""
        n, mw, kw, nw = self.params.n, self.mw, self.kw, self.nw
        blk = W[bi * mw:(bi + 1) * mw, bk * kw:(bk + 1) * kw]
        mi, kj = blk.shape
        poly = np.zeros(n, dtype=W.dtype)
        idx = (kw - 1 - np.arange(kj))[None, :] + (np.arange(mi) * kw * nw)[:, None]
        poly[idx] = blk
        return poly

    def positions(self, out_index):
        """Result coefficients of output ``out_index``, row-major over its
        (rows, cols) block."""
        bi, bn = divmod(out_index, self.Nb)
        mi = min(self.mw, self.M - bi * self.mw)
        nl = min(self.nw, self.N - bn * self.nw)
        kw, nw = self.kw, self.nw
        return ((kw - 1) + (np.arange(nl) * kw)[None, :]
                + (np.arange(mi) * kw * nw)[:, None]).reshape(-1)

    def evaluate(self, W, cts):
        """Raw result ciphertexts, output by output."""
        return list(self.iter_outputs(W, cts))

    def iter_outputs(self, W, cts):
        W = _check_plain(W, self.params, "matmul")
        if W.shape != (self.M, self.K):
            raise ValueError(f"matmul: W must have shape {(self.M, self.K)}, got {W.shape}")
        cts = _check_inputs(cts, self.n_inputs, self.params, "matmul")
        c = _ctx(self.params)
        L, n, Nb = c.L, c.n, self.Nb
        for bi in range(self.Mb):
            acc = np.empty((Nb, 2, L, n), dtype=np.uint64)  # the outputs are views of it
            noise = [0.0] * Nb
            for bk in range(self.Kb):
                poly = self.weight_poly(W, bi, bk)
                pt = c.ntt(c.from_plain(poly, out=c.scratch("mm1", (L, n))))
                # public bound on ||w||_1 (entries * t/2): the exact norm
                # would leak through the noise header and the flooding size
                l1 = float(min(self.mw, self.M - bi * self.mw)
                           * min(self.kw, self.K - bk * self.kw)) * _max_entry(self.params)
                for bn in range(Nb):
                    ct = cts[bk * Nb + bn]
                    c.mulacc(ct.data, pt, acc[bn], L, 2, bk > 0)
                    noise[bn] += ct.noise * l1
            for bn in range(Nb):
                _check_budget(noise[bn], c, L, "matmul")
                yield Ciphertext(self.params, acc[bn], True, noise[bn], cts[0].key_id, n)

    def assemble(self, values):
        out = np.zeros((self.M, self.N), dtype=self.params.plain_dtype)
        for o, v in enumerate(values):
            bi, bn = divmod(o, self.Nb)
            mi = min(self.mw, self.M - bi * self.mw)
            nl = min(self.nw, self.N - bn * self.nw)
            out[bi * self.mw:bi * self.mw + mi, bn * self.nw:bn * self.nw + nl] = \
                np.asarray(v).reshape(mi, nl)
        return out[:, 0].copy() if self.vector else out

    def split_mask(self, mask):
        mask = _check_plain(mask, self.params, "matmul mask")
        if self.vector and mask.ndim == 1:
            mask = mask.reshape(-1, 1)
        if mask.shape != (self.M, self.N):
            raise ValueError(f"matmul: mask must have shape {(self.M, self.N)}, got {mask.shape}")
        res = []
        for o in range(self.n_outputs):
            bi, bn = divmod(o, self.Nb)
            res.append(np.ascontiguousarray(
                mask[bi * self.mw:(bi + 1) * self.mw, bn * self.nw:(bn + 1) * self.nw]).reshape(-1))
        return res

    def cost(self, bandwidth=DEFAULT_BANDWIDTH):
        """(estimated seconds of compute, bytes on the wire)."""
        p = self.params
        r = self.mw * self.nw
        nbytes = (self.n_inputs * ciphertext_bytes(p, "seeded")
                  + self.n_outputs * ciphertext_bytes(p, "extracted", positions=r))
        secs = (self.Mb * self.Kb * _COST_NTT + self.n_products * _COST_MUL
                + self.n_outputs * _COST_OUT + self.n_inputs * _COST_IN) * _work(p)
        return secs, nbytes


def _check_inputs(cts, count, params, op):
    if isinstance(cts, Ciphertext):
        cts = [cts]
    cts = list(cts)
    if len(cts) != count:
        raise ValueError(f"{op}: expected {count} input ciphertexts, got {len(cts)}")
    for ct in cts:
        if not isinstance(ct, Ciphertext) or ct.params != params:
            raise HEError(f"{op}: inputs must be Ciphertexts with the plan's parameters")
        if ct.key_id != cts[0].key_id:
            raise HEError(f"{op}: inputs under different keys")
        if ct.level != params.L:
            raise HEError(f"{op}: inputs must be at the full level")
    return [ct.to_ntt() for ct in cts]


def _divisor_sizes(total, cap):
    """Distinct block sizes ceil(total / b) (<= cap) for b = 1..total."""
    sizes = set()
    b = 1
    while b <= total:
        s = _cdiv(total, b)
        if s <= cap:
            sizes.add(s)
        # jump to the next b with a different ceil
        b = max(b + 1, _cdiv(total, s - 1) if s > 1 else total + 1)
    return sorted(sizes)


def plan_matmul(M, K, N, params: HEParams = DEFAULT, *, bandwidth=DEFAULT_BANDWIDTH,
                vector=False) -> MatmulPlan:
    """Choose (mw, kw, nw) for W (M x K) . X (K x N) minimising estimated
    compute time + bytes / bandwidth."""
    for name, v in (("M", M), ("K", K), ("N", N)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"plan_matmul: {name} must be a positive int, got {v!r}")
    n = params.n
    best = None
    for kw in _divisor_sizes(K, n):
        for nw in _divisor_sizes(N, n // kw):
            mcap = n // (kw * nw)
            if mcap < 1:
                continue
            mw = _cdiv(M, _cdiv(M, min(M, mcap)))  # balanced row blocks
            plan = MatmulPlan(int(M), int(K), int(N), mw, kw, nw, params, vector)
            secs, nbytes = plan.cost(bandwidth)
            score = secs + nbytes / bandwidth
            if best is None or score < best[0]:
                best = (score, plan)
    return best[1]


def plan_matvec(m, k, params: HEParams = DEFAULT, *, bandwidth=DEFAULT_BANDWIDTH) -> MatmulPlan:
    """Plan for W (m x k) . x (k,) (vectors in, vector out)."""
    return plan_matmul(m, k, 1, params, bandwidth=bandwidth, vector=True)


@dataclass(frozen=True)
class ElementwisePlan:
    """x (encrypted) * y (plaintext) elementwise over Z_t, d = floor(sqrt(n))
    elements per ciphertext: x_i at i, y_i at i d, x_i y_i at i (d + 1)."""

    size: int
    d: int
    params: HEParams = DEFAULT

    @property
    def n_inputs(self):
        return _cdiv(self.size, self.d)

    n_outputs = n_products = n_inputs

    def _chunk(self, v, b):
        return v[b * self.d:(b + 1) * self.d]

    def input_polys(self, x):
        x = _check_plain(x, self.params, "elementwise", shape=(self.size,))
        out = []
        for b in range(self.n_inputs):
            poly = np.zeros(self.params.n, dtype=self.params.plain_dtype)
            ch = self._chunk(x, b)
            poly[: ch.size] = ch
            out.append(poly)
        return out

    def positions(self, out_index):
        cnt = min(self.d, self.size - out_index * self.d)
        return np.arange(cnt) * (self.d + 1)

    def evaluate(self, y, cts):
        """Raw result ciphertexts, output by output."""
        return list(self.iter_outputs(y, cts))

    def iter_outputs(self, y, cts):
        y = _check_plain(y, self.params, "elementwise", shape=(self.size,))
        cts = _check_inputs(cts, self.n_inputs, self.params, "elementwise")
        c = _ctx(self.params)
        for b, ct in enumerate(cts):
            ch = self._chunk(y, b)
            poly = np.zeros(c.n, dtype=y.dtype)
            poly[np.arange(ch.size) * self.d] = ch
            pt = c.ntt(c.from_plain(poly, out=c.scratch("mm1", (c.L, c.n))))
            # public bound on ||w||_1
            noise = ct.noise * float(ch.size) * _max_entry(self.params)
            _check_budget(noise, c, c.L, "elementwise")
            out = np.empty_like(ct.data)
            c.mulacc(ct.data, pt, out, c.L, 2, False)
            yield Ciphertext(self.params, out, True, noise, ct.key_id, c.n)

    def assemble(self, values):
        dt = self.params.plain_dtype
        return np.concatenate([np.asarray(v, dtype=dt) for v in values]) if values else \
            np.zeros(0, dtype=dt)

    def split_mask(self, mask):
        mask = _check_plain(mask, self.params, "elementwise mask", shape=(self.size,))
        return [self._chunk(mask, b) for b in range(self.n_outputs)]


def plan_elementwise(size, params: HEParams = DEFAULT) -> ElementwisePlan:
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"plan_elementwise: size must be a positive int, got {size!r}")
    return ElementwisePlan(int(size), math.isqrt(params.n), params)


def encrypt_input(key, plan, x, prg: Prg) -> list:
    """Key owner: encrypt the operand x (K x N matrix / length-K vector for a
    MatmulPlan, length-size vector for an ElementwisePlan) in the plan's packing."""
    return [encrypt(key, poly, prg) for poly in plan.input_polys(x)]


def evaluate(plan, y, cts) -> list:
    """Evaluator: the plan's product of its plaintext y with the encrypted
    inputs; raw result ciphertexts (not sanitised: use evaluate_masked before
    sending them to the key owner)."""
    return plan.evaluate(y, cts)


def evaluate_masked(plan, y, cts, mask, pk: PublicKey, prg: Prg) -> list:
    """Evaluator: product + mask (same shape as the result, or None),
    sanitised and extracted for the key owner (see ``mask_and_extract``)."""
    masks = plan.split_mask(mask) if mask is not None else [None] * plan.n_outputs
    # streamed: each raw output is sanitised as soon as it is complete
    return [mask_and_extract(ct, plan.positions(o), masks[o], pk, prg)
            for o, ct in enumerate(plan.iter_outputs(y, cts))]


def decrypt_output(sk: SecretKey, plan, outs) -> np.ndarray:
    """Key owner: decrypt the plan's results (raw or extracted ciphertexts)."""
    outs = list(outs)
    if len(outs) != plan.n_outputs:
        raise ValueError(f"decrypt_output: expected {plan.n_outputs} ciphertexts, got {len(outs)}")
    vals = []
    for o, ct in enumerate(outs):
        if isinstance(ct, ExtractedCiphertext):
            want = plan.positions(o)
            if not np.array_equal(ct.positions, want):
                raise HEError("decrypt_output: result ciphertext has unexpected positions")
            vals.append(decrypt(sk, ct))
        else:
            full = decrypt(sk, ct)
            vals.append(_pad(full, plan.params.n)[plan.positions(o)])
    return plan.assemble(vals)


def _evaluate_maybe_masked(op, plan, y, cts, mask, pk, prg):
    if pk is None:
        if mask is not None:
            raise ValueError(f"{op}: a mask needs pk and prg (use evaluate_masked)")
        return evaluate(plan, y, cts)
    return evaluate_masked(plan, y, cts, mask, pk, prg)


def matmul(plan: MatmulPlan, W, cts, mask=None, pk=None, prg=None) -> list:
    """W . X for the encrypted X of ``encrypt_input``: raw ciphertexts, or
    sanitised ExtractedCiphertexts decrypting to W . X + mask when pk and prg
    are given."""
    return _evaluate_maybe_masked("matmul", plan, W, cts, mask, pk, prg)


matvec = matmul


def elementwise(plan: ElementwisePlan, y, cts, mask=None, pk=None, prg=None) -> list:
    """x * y elementwise (mod t) for the encrypted x of ``encrypt_input``."""
    return _evaluate_maybe_masked("elementwise", plan, y, cts, mask, pk, prg)
