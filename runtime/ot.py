"""Dealer-free correlations from oblivious transfer (semi-honest, 2 parties).

:class:`OTSession` is one party's end of a two-party OT subprotocol over a
:class:`~mixc.runtime.links.Link`. Both parties make the same calls in the
same order (``ole_send`` on one side pairs with ``ole_recv`` on the other,
``and_triples`` with ``and_triples``); every call is batched and takes O(1)
rounds whatever its size.

Protocols
---------
**Base OT.** 128 Chou-Orlandi "simplest OT"s per direction (CO15), over the
prime-order subgroup of edwards25519 with libsodium's group operations (via
PyNaCl: ``crypto_scalarmult_ed25519_base_noclamp``,
``crypto_scalarmult_ed25519_noclamp``, ``crypto_core_ed25519_add/sub``). The
base sender draws y and sends S = yG; the base receiver with choice c sends
R = cS + xG; the keys are k0 = H(yR), k1 = H(y(R - S)), and the receiver
gets k_c = H(xS). H is BLAKE2b-128 over (tag base, instance, index, S, R,
point), so every base OT of every session hashes a distinct input. Points
received are checked to be canonical, of the main subgroup and not of small
order (``crypto_core_ed25519_is_valid_point``). The two directions run at the
same time (2 rounds, ~4.2 KB each way, once per session). (CO15 is known not
to be UC-secure against active adversaries as first claimed; hashing S and R
into the key follows the later fixes, and semi-honest security is unaffected.)

**IKNP extension** (Ishai-Kilian-Nissim-Petrank 2003), security parameter
kappa = 128, one IKNP instance per direction. The extension *receiver* is the
base-OT *sender*: it expands column j as t_j = G(k0_j), sends
u_j = t_j ^ G(k1_j) ^ r (r = its choice bits), and keeps the rows t_i. The
extension *sender*, base receiver with random s in {0,1}^128, computes
q_j = G(k_{s_j}) ^ s_j u_j, i.e. rows q_i = t_i ^ r_i s. G is ChaCha20
(``csrc/prg.c``) keyed by k || k (the 128-bit base-OT key twice), one
keystream per column, consumed contiguously over the session (never reused).
The 128 x n bit transpose and everything per OT run in C (``csrc/ot.c``).

* random OT: m0_i = H(i, q_i), m1_i = H(i, q_i ^ s) (128 bits), the receiver
  gets m_{r_i} = H(i, t_i). One message (u), receiver to sender.
* correlated OT over Z_2^64: the sender gets x_i = H(i, q_i)_lo and sends
  d_i = x_i + Delta_i - H(i, q_i ^ s)_lo; the receiver outputs
  H(i, t_i)_lo + r_i d_i = x_i + r_i Delta_i. Delta per OT or one per call.
  Two messages (u, then d).

H is the tweakable circular-correlation-robust hash of Guo et al. (GKWY20,
section 7.4): H(i, x) = pi(pi(x) ^ i) ^ pi(x), pi = AES-128 under a fixed
public key (the first 128 bits of the fraction of pi), secure in the
ideal-permutation model; on AES-NI/VAES (``csrc/ot.c``). Every OT has a tweak
of its own: OT j of an IKNP instance (j counts that instance's OTs over the
session, i.e. 64 x its column-keystream position, which never repeats) hashes
under i = (P_lo + j mod 2^64, P_hi), where the 128-bit prefix P is BLAKE2b of
the session id, tag_base, the instance and its base-OT transcript (S and all
R_j, fresh in every run): the OTs of an instance never share a tweak, and two
instances (of one session or two) share one with probability ~2^-64. (Without the tweak the one fixed-key hash serves all n OTs
and an adversary gets n guesses at s at once; GKWY20.)

**OLE (Gilboa).** ``ole_send`` (holds a) is the COT *sender* with Delta = a;
``ole_recv`` (holds b) is the COT *receiver* and chooses with the 64 bits of
b, one COT per bit: COT k gives the sender x_k and the receiver
x_k + b_k a (mod 2^(64-k)), so shares -sum 2^k x_k and sum 2^k (x_k + b_k a)
add to a*b mod 2^64. Correction k only needs 64 - k bits (2080 bits per
product, padded to 33 words). Over Z_2^128 (U128 operands, ``ring: 128``
devices) the same with 128 COTs per product whose messages are the whole
128-bit hash H(i, q_i) instead of its low word: correction k is 128 - k bits,
8256 bits = 129 words per product (3080 bytes per product with the IKNP
matrix, 2.4x the 64-bit OLE's 1288).

**AND.** One COT over GF(2) per bit: ``and_recv`` (holds y) chooses with y's
bits, ``and_send`` (holds x) correlates with x's bits; the sender keeps m0,
the receiver m0 ^ (x & y). ``bit_ole_*``: one COT over Z_2^64 per bit, Delta_i
= a_i, giving arithmetic shares of a_i b_i (with ``ring=128``: COTs over
Z_2^128 with 128-bit messages and corrections, U128 shares).

**Triples.** ``and_triples``: one random OT per bit in each direction (the
two run at once, one message each way, no corrections): as sender,
a = m0 ^ m1 and u = m0; as receiver with random choice b, v = m_b; then
c = (a & b) ^ u ^ v. ``arith_triples``: random a, b; c = a b plus a Gilboa
OLE in each direction (a with the peer's b and vice versa), both at once
(``ring=128``: U128 triples from the 128-bit OLE).

Rounds: ``stats["rounds"]`` counts message flights on the critical path
(messages in both directions at the same time count once): base OTs 2, random
OT and ``and_triples`` 1, everything with corrections 2. Large calls are cut
into batches of ``BATCH_WORDS`` column words (2^19 OTs, 8 MB of u per message)
that are pipelined (``_run``: the u of batch k goes out before the peer's u of
batch k - 2 is awaited), so no message waits for the answer to itself, memory
stays bounded (a few batches in flight) and the round count does not grow.
Each call starts its column keystreams on a 128-word boundary.

Tags: the session uses tags in ``[tag_base, tag_base + 2**20)``, the same
sequence on both sides (each call reserves two per batch). A call made under
``tags_from(start)`` (an OT call inside a loop body, once per iteration) takes
them from ``[start, start + 2**8)`` instead (up to 128 batches per call).

Security: semi-honest, 128-bit computational security (kappa = 128, ed25519
at ~126-bit, AES-128 / ChaCha20 with 128-bit keys). ``prg`` must be this
party's *private* randomness (the base-OT scalars, s, random choices and
triple shares are drawn from it). Not secure against a malicious peer (no
consistency check on u, i.e. no KOS).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct

import numpy as np

from mixc.errors import MixcError, PeerError
from mixc.runtime.kernels import (MASK64, U128, Prg, bits_pack, bits_unpack, r128_add,
                                  r128_mul)

try:
    from nacl import bindings as _sodium
except ImportError as exc:  # pragma: no cover - pynacl is a dependency
    raise ImportError("mixc.runtime.ot needs PyNaCl (pip install pynacl)") from exc

from mixc._ckernels import ffi, lib

__all__ = ["OTSession", "TAG_SPAN", "CALL_TAG_SPAN", "BATCH_WORDS", "base_ot_send",
           "base_ot_recv", "transpose128", "ot_hash", "tweak_prefix"]

KAPPA = 128
TAG_SPAN = 1 << 20
CALL_TAG_SPAN = 1 << 8       # tags of one call run in a window of its own (``tags_from``)
BATCH_WORDS = 1 << 13        # column words per message: 2^19 OTs, u = 8 MB
_LAG = 2                     # batches the receiver side runs ahead (see _run)
_CHUNK = 128                 # csrc/ot.c's chunk (CW): BATCH_WORDS is a multiple of it
GILBOA_WORDS = int(lib.mixc_gilboa_words())
GILBOA128_WORDS = int(lib.mixc_gilboa128_words())
_U64 = np.dtype(np.uint64)
_U8 = np.dtype(np.uint8)


def _p64(a):
    return ffi.from_buffer("uint64_t[]", a)


def _p8(a):
    return ffi.from_buffer("uint8_t[]", a)


# --------------------------------------------------------------------------
# C kernel wrappers (also used by the tests)

def transpose128(cols, portable=False) -> np.ndarray:
    """128 x (64 n) bit matrix (uint64 (128, n), row j = packed bits) -> rows
    (uint64 (64 n, 2)): row i bit j (lo word = bits 0..63) = column j bit i."""
    cols = np.ascontiguousarray(cols)
    if cols.dtype != _U64 or cols.ndim != 2 or cols.shape[0] != KAPPA:
        raise ValueError(f"transpose128: cols must be uint64 of shape (128, n), got "
                         f"{cols.dtype} {cols.shape}")
    n = cols.shape[1]
    out = np.empty((64 * n, 2), dtype=_U64)
    if n:
        lib.mixc_ot_transpose128(_p64(cols), n, n, _p64(out), 1 if portable else 0)
    return out


def ot_hash(rows, tweak, delta=None, out_words=2, portable=False) -> np.ndarray:
    """The tweakable hash H(tweak + i, rows[i] ^ delta) of 128-bit rows (uint64 (n, 2)),
    tweak = (lo, hi) words of row 0's tweak (row i: lo + i mod 2^64).
    out_words=2: (n, 2) outputs; 1: the low words, shape (n,)."""
    tw = _tweak_words(tweak, "ot_hash")
    rows = np.ascontiguousarray(rows)
    if rows.dtype != _U64 or rows.ndim != 2 or rows.shape[1] != 2:
        raise ValueError(f"ot_hash: rows must be uint64 of shape (n, 2), got {rows.dtype} {rows.shape}")
    if out_words not in (1, 2):
        raise ValueError(f"ot_hash: out_words must be 1 or 2, got {out_words!r}")
    n = rows.shape[0]
    out = np.empty((n, 2) if out_words == 2 else (n,), dtype=_U64)
    d = ffi.NULL
    if delta is not None:
        delta = np.ascontiguousarray(delta, dtype=_U64).reshape(2)
        d = _p64(delta)
    if n:
        lib.mixc_ot_hash(_p64(rows), n, d, _p64(tw), _p64(out), out_words, 1 if portable else 0)
    return out


def _tweak_words(tweak, fn) -> np.ndarray:
    words = list(tweak.tolist() if isinstance(tweak, np.ndarray) else tweak)
    if len(words) != 2 or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool)
                                  and 0 <= int(w) <= MASK64 for w in words):
        raise ValueError(f"{fn}: tweak must be two 64-bit words (lo, hi), got {tweak!r}")
    return np.array([int(w) for w in words], dtype=_U64)


def tweak_prefix(session_id: bytes, tag_base: int, instance: int, S: bytes, Rs) -> np.ndarray:
    """The 128-bit tweak prefix of an IKNP instance (uint64 (lo, hi)): BLAKE2b of the
    session id, tag base, instance and the instance's base-OT transcript (S, R_0..R_127)."""
    h = hashlib.blake2b(digest_size=16, person=b"mixc-iknp-tweak")
    h.update(struct.pack("<I", len(session_id)))
    h.update(session_id)
    h.update(struct.pack("<QB", tag_base, instance))
    h.update(S)
    for R in Rs:
        h.update(bytes(R))
    return np.frombuffer(h.digest(), dtype="<u8").astype(_U64)


# --------------------------------------------------------------------------
# Chou-Orlandi base OT over edwards25519

_POINT = 32


def _scalar(prg: Prg) -> bytes:
    """A uniform scalar mod the group order l (512 random bits reduced), never 0."""
    while True:
        s = _sodium.crypto_core_ed25519_scalar_reduce(prg.random_u64(8).tobytes())
        if any(s):
            return s


def _co_key(domain: bytes, j: int, S: bytes, R: bytes, P: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16, person=b"mixc-co15-ot")
    h.update(domain)
    h.update(struct.pack("<I", j))
    h.update(S)
    h.update(R)
    h.update(P)
    return h.digest()


def _check_point(p: bytes, what: str, peer) -> None:
    if len(p) != _POINT or not _sodium.crypto_core_ed25519_is_valid_point(p):
        raise PeerError(peer, f"base OT: {what} is not a valid edwards25519 point", op="ot.base")


def base_ot_send(prg: Prg):
    """Base-OT sender, step 1: -> (state, S) with S the 32-byte point to send."""
    y = _scalar(prg)
    S = _sodium.crypto_scalarmult_ed25519_base_noclamp(y)
    return (y, S), S


def base_ot_send_keys(state, Rs, domain: bytes, peer=None):
    """Base-OT sender, step 2: the receiver's points R_j -> (k0, k1) lists of 16-byte keys."""
    y, S = state
    k0, k1 = [], []
    for j, R in enumerate(Rs):
        _check_point(R, f"R[{j}]", peer)
        k0.append(_co_key(domain, j, S, R, _sodium.crypto_scalarmult_ed25519_noclamp(y, R)))
        RS = _sodium.crypto_core_ed25519_sub(R, S)
        k1.append(_co_key(domain, j, S, R, _sodium.crypto_scalarmult_ed25519_noclamp(y, RS)))
    return k0, k1


def base_ot_recv(prg: Prg, S: bytes, choices, domain: bytes, peer=None):
    """Base-OT receiver: the sender's S and choice bits -> (list of R_j to send, keys k_{c_j})."""
    _check_point(S, "S", peer)
    Rs, keys = [], []
    for j, c in enumerate(choices):
        x = _scalar(prg)
        X = _sodium.crypto_scalarmult_ed25519_base_noclamp(x)
        XS = _sodium.crypto_core_ed25519_add(X, S)
        R = XS if c else X
        Rs.append(R)
        keys.append(_co_key(domain, j, S, R, _sodium.crypto_scalarmult_ed25519_noclamp(x, S)))
    return Rs, keys


def _chacha_keys(keys16) -> np.ndarray:
    """128 16-byte keys -> 128 x 32 ChaCha20 keys (k || k) as one uint8 array."""
    return np.frombuffer(b"".join(k + k for k in keys16), dtype=_U8).copy()


# --------------------------------------------------------------------------
# input validation

def _u64(x, fn, name) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != _U64:
        raise ValueError(f"{fn}: {name} must have dtype uint64, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def _bits01(x, fn, name) -> np.ndarray:
    arr = _u64(x, fn, name)
    if arr.size and int(arr.max()) > 1:
        raise ValueError(f"{fn}: {name} must hold only 0 and 1")
    return arr


def _ring(ring, fn) -> int:
    if ring not in (64, 128) or isinstance(ring, bool):
        raise ValueError(f"{fn}: ring must be 64 or 128, got {ring!r}")
    return int(ring)


def _ring_words(x, fn, name):
    """An OLE operand (uint64, or U128 for the 128-bit ring) -> (its flat uint64 words,
    two per element low first for U128; the ring)."""
    arr = np.asarray(x)
    if arr.dtype == U128:
        return np.ascontiguousarray(arr).reshape(-1).view(_U64), 128
    return _u64(arr, fn, name).reshape(-1), 64


def _from_words(words, ring, shape) -> np.ndarray:
    """Flat uint64 words (two per element for ring 128) as ring elements of ``shape``."""
    return (words if ring == 64 else words.reshape(-1).view(U128)).reshape(shape)


def _count(n, fn) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 0:
        raise ValueError(f"{fn}: n must be a non-negative int, got {n!r}")
    return int(n)


def _pad_words(words: np.ndarray, n_words: int) -> np.ndarray:
    if words.size == n_words:
        return words
    out = np.zeros(n_words, dtype=_U64)
    out[:words.size] = words
    return out


# --------------------------------------------------------------------------
# the session

class OTSession:
    """One party's end of a 2-party OT-extension session with ``peer`` over ``link``.

    ``i_am_sender_of_base`` must be True at exactly one of the two parties: it
    names the IKNP instances (instance 0 is the one whose extension sender
    passed True) and is checked against the peer's at setup. Base OTs run in
    both directions on first use. ``prg``: this party's private randomness.
    ``session_id``: the run's session identifier (both parties pass the same), hashed
    into every OT's tweak with the base-OT transcript.
    Tags ``[tag_base, tag_base + 2**20)`` to and from ``peer`` are the
    session's; both parties pass the same ``tag_base``. Not thread-safe.
    """

    def __init__(self, link, peer: str, i_am_sender_of_base: bool, prg: Prg, tag_base: int,
                 session_id: bytes = b""):
        if not isinstance(prg, Prg):
            raise ValueError(f"OTSession: prg must be a mixc.runtime.kernels.Prg, got {type(prg).__name__}")
        if (isinstance(tag_base, bool) or not isinstance(tag_base, (int, np.integer))
                or not 0 <= int(tag_base) <= (1 << 64) - TAG_SPAN):
            raise ValueError(f"OTSession: tag_base must be an int in [0, 2^64 - 2^20], got {tag_base!r}")
        if not isinstance(session_id, (bytes, bytearray)):
            raise ValueError("OTSession: session_id must be bytes, got "
                             f"{type(session_id).__name__}")
        self.link, self.peer, self.prg = link, peer, prg
        self.session_id = bytes(session_id)
        self.party = 0 if i_am_sender_of_base else 1
        self.tag_base = int(tag_base)
        self._next = 0
        self._window = None  # (first tag, tags used) while ``tags_from`` is in force
        self._ready = False
        self._ws = np.empty(int(lib.mixc_iknp_ws_words()), dtype=_U64)
        # my extension-sender instance (id = self.party) and receiver instance (1 - party)
        self._s = self._ks = None
        self._k0 = self._k1 = None
        self._stw = self._rtw = None         # tweak prefixes of my sender / receiver instance
        self._spos = self._rpos = 0          # keystream words used per column
        self._bytes_sent = self._bytes_recv = self._msgs = self._rounds = 0
        self._ots_sent = self._ots_recv = 0

    # -- bookkeeping ---------------------------------------------------------

    @property
    def stats(self) -> dict:
        """Bytes, messages and rounds this session used so far (base OTs included)."""
        return {
            "bytes_sent": self._bytes_sent,
            "bytes_received": self._bytes_recv,
            "messages_sent": self._msgs,
            "rounds": self._rounds,
            "base_ots": 2 * KAPPA if self._ready else 0,
            "ots_as_sender": self._ots_sent,
            "ots_as_receiver": self._ots_recv,
            "tags_used": self._next,
        }

    def _tags(self, k: int) -> int:
        if self._window is not None:
            start, used = self._window
            if used + k > CALL_TAG_SPAN:
                raise MixcError(f"OTSession with {self.peer!r}: one OT call inside a loop needs "
                                f"more than {CALL_TAG_SPAN} tags ({used + k}); make it smaller")
            self._window = (start, used + k)
            return start + used
        if self._next + k > TAG_SPAN:
            raise MixcError(f"OTSession with {self.peer!r}: tag space of 2^20 tags exhausted "
                            f"({self._next} used, {k} more needed); start a new session")
        t = self.tag_base + self._next
        self._next += k
        return t

    @contextlib.contextmanager
    def tags_from(self, start: int):
        """Within the block, calls take their tags from ``[start, start + CALL_TAG_SPAN)``
        instead of the session's own sequence: an OT call inside a loop runs once per
        iteration, and the executor gives each run a window of its own (``ot_ops``), so a
        loop of any length never exhausts the session's 2^20 tags or reuses a tag."""
        outer, self._window = self._window, (int(start), 0)
        try:
            yield
        finally:
            self._window = outer

    def _send(self, tag, arr, op):
        self._bytes_sent += arr.nbytes
        self._msgs += 1
        self.link.send(self.peer, tag, arr, op=op)

    def _recv(self, tag, op, shape, dtype=_U64):
        got = self.link.recv(self.peer, tag, op=op)
        if not isinstance(got, np.ndarray) or got.dtype != dtype or got.shape != tuple(shape):
            what = (f"{got.dtype} {got.shape}" if isinstance(got, np.ndarray)
                    else type(got).__name__)
            raise PeerError(self.peer, f"message tag {tag}: expected {np.dtype(dtype)} "
                                       f"{tuple(shape)}, got {what} (do both parties make the "
                                       "same OT calls with the same sizes?)", op=op)
        self._bytes_recv += got.nbytes
        return got

    # -- base OTs ------------------------------------------------------------

    def _domain(self, instance: int) -> bytes:
        return struct.pack("<QB", self.tag_base, instance)

    def setup(self) -> None:
        """Run the base OTs now (both directions, 2 rounds); otherwise they run on
        first use. Idempotent; both parties call it at the same point."""
        self._setup()

    def _setup(self):
        if self._ready:
            return
        op = "ot.base"
        t0 = self._tags(2)
        me, other = self.party, 1 - self.party
        # instance 'other': I am the extension receiver = base-OT sender
        state, S = base_ot_send(self.prg)
        self._send(t0, np.frombuffer(bytes([me]) + S, dtype=_U8).copy(), op)
        peer_msg = self._recv(t0, op, (1 + _POINT,), _U8).tobytes()
        if peer_msg[0] != other:
            raise PeerError(self.peer, "both parties passed i_am_sender_of_base="
                                       f"{bool(me == 0)}; exactly one must pass True", op=op)
        # instance 'me': I am the extension sender = base-OT receiver with choices s
        s = self.prg.random_u64(2)
        choices = bits_unpack(s, KAPPA)
        Rs, keys = base_ot_recv(self.prg, peer_msg[1:], choices.tolist(), self._domain(me), self.peer)
        self._send(t0 + 1, np.frombuffer(b"".join(Rs), dtype=_U8).reshape(KAPPA, _POINT).copy(), op)
        Rp = self._recv(t0 + 1, op, (KAPPA, _POINT), _U8)
        k0, k1 = base_ot_send_keys(state, [bytes(r) for r in Rp], self._domain(other), self.peer)
        self._rtw = tweak_prefix(self.session_id, self.tag_base, other, S, Rp)
        self._stw = tweak_prefix(self.session_id, self.tag_base, me, peer_msg[1:], Rs)
        self._s, self._ks = s, _chacha_keys(keys)
        self._k0, self._k1 = _chacha_keys(k0), _chacha_keys(k1)
        self._rounds += 2
        self._ready = True

    # -- IKNP core -----------------------------------------------------------

    @staticmethod
    def _tweak_at(prefix, pos_words):
        """The tweak of the first OT at column-keystream word pos_words (64 OTs a word)."""
        return np.array([(int(prefix[0]) + 64 * pos_words) & MASK64, int(prefix[1])], dtype=_U64)

    def _ext_recv(self, choice_words):
        """Extension receiver, one batch: -> (u to send (128, nw), rows t (64 nw, 2),
        the tweak of row 0)."""
        nw = choice_words.size
        u = np.empty((KAPPA, nw), dtype=_U64)
        t = np.empty((64 * nw, 2), dtype=_U64)
        lib.mixc_iknp_recv_ext(_p8(self._k0), _p8(self._k1), 1 - self.party, self._rpos,
                               _p64(choice_words), nw, _p64(u), _p64(t),
                               _p64(self._ws), self._ws.size)
        tw = self._tweak_at(self._rtw, self._rpos)
        self._rpos += nw
        self._ots_recv += 64 * nw
        return u, t, tw

    def _ext_send(self, u):
        """Extension sender, one batch: the receiver's u -> (rows q (64 nw, 2), the tweak
        of row 0)."""
        nw = u.shape[1]
        q = np.empty((64 * nw, 2), dtype=_U64)
        lib.mixc_iknp_send_ext(_p8(self._ks), _p64(self._s), self.party, self._spos,
                               _p64(u), nw, _p64(q), _p64(self._ws), self._ws.size)
        tw = self._tweak_at(self._stw, self._spos)
        self._spos += nw
        self._ots_sent += 64 * nw
        return q, tw

    def _run(self, op, n_words, *, send=None, reply=None, choice=None, local=None, fix=None):
        """One OT-extension call of n_words column words (64 OTs each), in batches.

        As extension sender (``send`` given): send(q, tw, lo, hi) -> correction
        array to send back (shape reply(lo, hi)) or None (tw: row 0's tweak, for
        the hash). As extension receiver (``choice``: packed choice words,
        n_words): local(t, tw, lo, hi) -> state;
        then, if the sender replies, fix(d, lo, hi, state). Both roles may run in
        one call (both directions at once).
        """
        self._setup()
        # start every call on a ChaCha20 lane-group boundary of the column keystreams
        # (128 words = 16 blocks; the C kernels expand 128-word chunks): unaligned
        # starts would cost a second keystream group per chunk. Skipped keystream
        # is never used, and both parties round the same way.
        self._rpos = -(-self._rpos // _CHUNK) * _CHUNK
        self._spos = -(-self._spos // _CHUNK) * _CHUNK
        batches = [(lo, min(lo + BATCH_WORDS, n_words)) for lo in range(0, n_words, BATCH_WORDS)]
        nb = len(batches)
        t0 = self._tags(2 * nb)
        states = {}
        # Pipelined schedule, the same at both parties: at step k send u of batch
        # k, answer the peer's u of batch k - LAG, finish batch k - 2 LAG with the
        # peer's corrections. No message waits for a reply to itself, so the call
        # is 1 flight (2 with corrections) however many batches; at most ~LAG
        # batches per direction are in flight, which bounds memory.
        lag = _LAG
        for k in range(nb + 2 * lag):
            if choice is not None and k < nb:
                lo, hi = batches[k]
                u, t, tw = self._ext_recv(np.ascontiguousarray(choice[lo:hi]))
                self._send(t0 + 2 * k, u, op)
                states[k] = local(t, tw, lo, hi)
            b = k - lag
            if send is not None and 0 <= b < nb:
                lo, hi = batches[b]
                u = self._recv(t0 + 2 * b, op, (KAPPA, hi - lo))
                d = send(*self._ext_send(u), lo, hi)
                if d is not None:
                    self._send(t0 + 2 * b + 1, d, op)
            b = k - 2 * lag
            if choice is not None and fix is not None and 0 <= b < nb:
                lo, hi = batches[b]
                fix(self._recv(t0 + 2 * b + 1, op, reply(lo, hi)), lo, hi, states.pop(b))
        if n_words:
            self._rounds += 2 if (fix is not None or (send is not None and reply is not None)) else 1

    # -- random and correlated OT -------------------------------------------

    def rot_send(self, n: int):
        """n random OTs as sender -> (m0, m1), uint64 (n, 2) each (128-bit messages)."""
        fn = "rot_send"
        n = _count(n, fn)
        nw = (n + 63) // 64
        m0 = np.empty((64 * nw, 2), dtype=_U64)
        m1 = np.empty((64 * nw, 2), dtype=_U64)

        def send(q, tw, lo, hi):
            s = slice(64 * lo, 64 * hi)
            lib.mixc_ot_hash(_p64(q), q.shape[0], ffi.NULL, _p64(tw), _p64(m0[s]), 2, 0)
            lib.mixc_ot_hash(_p64(q), q.shape[0], _p64(self._s), _p64(tw), _p64(m1[s]), 2, 0)

        self._run("ot.rot_send", nw, send=send)
        return m0[:n], m1[:n]

    def rot_recv(self, choices=None, n: int | None = None):
        """Random OTs as receiver with the given 0/1 choices (uint64), or n random
        ones (choices=None) -> (choices, m_c) with m_c uint64 (n, 2)."""
        fn = "rot_recv"
        if choices is None:
            n = _count(n, fn)
            words = self.prg.random_u64((n + 63) // 64)
            if n % 64:
                words[-1] &= np.uint64((1 << (n % 64)) - 1)
            choices = bits_unpack(words, n)
        else:
            choices = _bits01(choices, fn, "choices").reshape(-1)
            n = choices.size
            words = bits_pack(choices)
        nw = (n + 63) // 64
        out = np.empty((64 * nw, 2), dtype=_U64)

        def local(t, tw, lo, hi):
            lib.mixc_ot_hash(_p64(t), t.shape[0], ffi.NULL, _p64(tw), _p64(out[64 * lo:64 * hi]),
                             2, 0)

        self._run("ot.rot_recv", nw, choice=words, local=local)
        return choices, out[:n]

    def cot_send(self, delta, n: int | None = None) -> np.ndarray:
        """Correlated OTs over Z_2^64 as sender with correlation delta (an int for
        all n OTs, or a uint64 array, one per OT) -> x (uint64 (n,)); the
        receiver with choice c_i gets x_i + c_i delta_i mod 2^64."""
        fn = "cot_send"
        if isinstance(delta, (int, np.integer)) and not isinstance(delta, bool):
            n = _count(n, fn)
            dl = np.array([int(delta) & MASK64], dtype=_U64)
            per_ot = 0
        else:
            dl = _u64(delta, fn, "delta").reshape(-1)
            if n is not None and _count(n, fn) != dl.size:
                raise ValueError(f"{fn}: n={n} but delta has {dl.size} elements")
            n = dl.size
            per_ot = 1
        nw = (n + 63) // 64
        if per_ot:
            dl = _pad_words(dl, 64 * nw)
        x = np.empty(64 * nw, dtype=_U64)

        def send(q, tw, lo, hi):
            d = np.empty(64 * (hi - lo), dtype=_U64)
            dp = _p64(dl[64 * lo:]) if per_ot else _p64(dl)
            lib.mixc_cot_send(_p64(q), q.shape[0], _p64(self._s), dp, per_ot, _p64(tw),
                              _p64(x[64 * lo:64 * hi]), _p64(d))
            return d

        self._run("ot.cot_send", nw, send=send, reply=lambda lo, hi: (64 * (hi - lo),))
        return x[:n]

    def cot_recv(self, choices) -> np.ndarray:
        """Correlated OTs over Z_2^64 as receiver with 0/1 choices (uint64) -> y
        (uint64, choices' shape) with y_i = x_i + c_i delta_i."""
        fn = "cot_recv"
        c = _bits01(choices, fn, "choices")
        n = c.size
        words = bits_pack(c)
        nw = words.size
        y = np.empty(64 * nw, dtype=_U64)

        def local(t, tw, lo, hi):
            h = np.empty(t.shape[0], dtype=_U64)
            lib.mixc_ot_hash(_p64(t), t.shape[0], ffi.NULL, _p64(tw), _p64(h), 1, 0)
            return h

        def fix(d, lo, hi, h):
            lib.mixc_cot_recv_fix(_p64(h), _p64(words[lo:hi]), _p64(d), h.size,
                                  _p64(y[64 * lo:64 * hi]))

        self._run("ot.cot_recv", nw, choice=words, local=local, fix=fix,
                  reply=lambda lo, hi: (64 * (hi - lo),))
        return y[:n].reshape(c.shape)

    # -- OLE (Gilboa) --------------------------------------------------------

    def _ole_send_parts(self, a, ring=64):
        """a: uint64 words (ring 128: two per element, low first) -> (my share's words,
        the extension sender's ``send``)."""
        share = np.empty(a.size, dtype=_U64)
        if ring == 128:
            def send(q, tw, lo, hi):  # two column words (128 COTs) per product
                d = np.empty(((hi - lo) // 2, GILBOA128_WORDS), dtype=_U64)
                lib.mixc_gilboa128_send(_p64(q), (hi - lo) // 2, _p64(self._s), _p64(a[lo:hi]),
                                        _p64(tw), _p64(share[lo:hi]), _p64(d))
                return d
            return share, send

        def send(q, tw, lo, hi):
            d = np.empty((hi - lo, GILBOA_WORDS), dtype=_U64)
            lib.mixc_gilboa_send(_p64(q), hi - lo, _p64(self._s), _p64(a[lo:hi]), _p64(tw),
                                 _p64(share[lo:hi]), _p64(d))
            return d

        return share, send

    def _ole_recv_parts(self, b, ring=64):
        share = np.empty(b.size, dtype=_U64)
        if ring == 128:
            def local(t, tw, lo, hi):
                lib.mixc_gilboa128_recv_hash(_p64(t), (hi - lo) // 2, _p64(tw),
                                             _p64(share[lo:hi]))

            def fix(d, lo, hi, _state):
                lib.mixc_gilboa128_recv_fix(_p64(b[lo:hi]), _p64(d), (hi - lo) // 2,
                                            _p64(share[lo:hi]))
            return share, local, fix

        def local(t, tw, lo, hi):
            lib.mixc_gilboa_recv_hash(_p64(t), hi - lo, _p64(tw), _p64(share[lo:hi]))

        def fix(d, lo, hi, _state):
            lib.mixc_gilboa_recv_fix(_p64(b[lo:hi]), _p64(d), hi - lo, _p64(share[lo:hi]))

        return share, local, fix

    @staticmethod
    def _ole_reply(ring):
        if ring == 128:
            return lambda lo, hi: ((hi - lo) // 2, GILBOA128_WORDS)
        return lambda lo, hi: (hi - lo, GILBOA_WORDS)

    def ole_send(self, a) -> np.ndarray:
        """I hold a (uint64 or U128, any shape), the peer b (``ole_recv``, same dtype): my
        additive share of a*b mod 2^64 (2^128 for U128; 64 or 128 COTs per product, I am
        the COT sender)."""
        words, ring = _ring_words(a, "ole_send", "a")
        share, send = self._ole_send_parts(words, ring)
        self._run("ot.ole_send", words.size, send=send, reply=self._ole_reply(ring))
        return _from_words(share, ring, np.shape(a))

    def ole_recv(self, b) -> np.ndarray:
        """The peer holds a (``ole_send``), I hold b: my share of a*b mod 2^64 (2^128)
        (I am the COT receiver and choose with the bits of b)."""
        words, ring = _ring_words(b, "ole_recv", "b")
        share, local, fix = self._ole_recv_parts(words, ring)
        self._run("ot.ole_recv", words.size, choice=words, local=local, fix=fix,
                  reply=self._ole_reply(ring))
        return _from_words(share, ring, np.shape(b))

    # -- AND (COT over GF(2)) ------------------------------------------------

    def and_send(self, x) -> np.ndarray:
        """I hold x, the peer y (``and_recv``), uint64 words: my XOR share of x & y
        (all 64 bits of each word; one COT per bit, I am the sender)."""
        x = _u64(x, "and_send", "x")
        flat = x.reshape(-1)
        share = np.empty(flat.size, dtype=_U64)

        def send(q, tw, lo, hi):
            d = np.empty(hi - lo, dtype=_U64)
            lib.mixc_bitcot_send(_p64(q), hi - lo, _p64(self._s), _p64(flat[lo:hi]), _p64(tw),
                                 _p64(share[lo:hi]), _p64(d))
            return d

        self._run("ot.and_send", flat.size, send=send, reply=lambda lo, hi: (hi - lo,))
        return share.reshape(x.shape)

    def and_recv(self, y) -> np.ndarray:
        """The peer holds x (``and_send``), I hold y: my XOR share of x & y."""
        y = _u64(y, "and_recv", "y")
        flat = y.reshape(-1)
        share = np.empty(flat.size, dtype=_U64)

        def local(t, tw, lo, hi):
            lib.mixc_ot_hash_bits(_p64(t), hi - lo, ffi.NULL, _p64(tw), _p64(share[lo:hi]))

        def fix(d, lo, hi, _state):
            share[lo:hi] ^= flat[lo:hi] & d

        self._run("ot.and_recv", flat.size, choice=flat, local=local, fix=fix,
                  reply=lambda lo, hi: (hi - lo,))
        return share.reshape(y.shape)

    # -- bit OLE -------------------------------------------------------------

    def bit_ole_send(self, a, ring=64) -> np.ndarray:
        """I hold bits a (uint64 0/1), the peer bits b: my share of a*b mod 2^ring
        (ring 64 or 128: uint64 or U128 shares; one COT per bit, delta_i = a_i)."""
        a = _bits01(a, "bit_ole_send", "a")
        if _ring(ring, "bit_ole_send") == 64:
            x = self.cot_send(a.reshape(-1))
            return (np.uint64(0) - x).reshape(a.shape)
        flat = a.reshape(-1)
        nw = (flat.size + 63) // 64
        bits = _pad_words(flat, 64 * nw)
        share = np.empty((64 * nw, 2), dtype=_U64)

        def send(q, tw, lo, hi):
            d = np.empty((64 * (hi - lo), 2), dtype=_U64)
            lib.mixc_bitole128_send(_p64(q), q.shape[0], _p64(self._s), _p64(bits[64 * lo:]),
                                    _p64(tw), _p64(share[64 * lo:64 * hi]), _p64(d))
            return d

        self._run("ot.bit_ole_send", nw, send=send,
                  reply=lambda lo, hi: (64 * (hi - lo), 2))
        return _from_words(share[:flat.size], 128, a.shape)

    def bit_ole_recv(self, b, ring=64) -> np.ndarray:
        """The peer holds bits a, I hold bits b: my share of a*b mod 2^ring."""
        b = _bits01(b, "bit_ole_recv", "b")
        if _ring(ring, "bit_ole_recv") == 64:
            return self.cot_recv(b)
        words = bits_pack(b.reshape(-1))
        nw = words.size
        share = np.empty((64 * nw, 2), dtype=_U64)

        def local(t, tw, lo, hi):
            lib.mixc_ot_hash(_p64(t), t.shape[0], ffi.NULL, _p64(tw),
                             _p64(share[64 * lo:64 * hi]), 2, 0)

        def fix(d, lo, hi, _state):
            lib.mixc_bitole128_recv_fix(_p64(words[lo:hi]), _p64(d), 64 * (hi - lo),
                                        _p64(share[64 * lo:64 * hi]))

        self._run("ot.bit_ole_recv", nw, choice=words, local=local, fix=fix,
                  reply=lambda lo, hi: (64 * (hi - lo), 2))
        return _from_words(share[:b.size], 128, b.shape)

    # -- triples -------------------------------------------------------------

    def and_triples(self, n_words: int):
        """n_words words of random boolean triples: this party's (a, b, c), uint64
        (n_words,), with (a0 ^ a1) & (b0 ^ b1) = c0 ^ c1 bitwise. Both parties
        call it; one random OT per bit each way, one round."""
        fn = "and_triples"
        n = _count(n_words, fn)
        b = self.prg.random_u64(n)
        m0 = np.empty(n, dtype=_U64)
        m1 = np.empty(n, dtype=_U64)
        v = np.empty(n, dtype=_U64)

        def send(q, tw, lo, hi):
            lib.mixc_ot_hash_bits(_p64(q), hi - lo, ffi.NULL, _p64(tw), _p64(m0[lo:hi]))
            lib.mixc_ot_hash_bits(_p64(q), hi - lo, _p64(self._s), _p64(tw), _p64(m1[lo:hi]))

        def local(t, tw, lo, hi):
            lib.mixc_ot_hash_bits(_p64(t), hi - lo, ffi.NULL, _p64(tw), _p64(v[lo:hi]))

        self._run("ot.and_triples", n, send=send, choice=b, local=local)
        a = m0 ^ m1
        c = (a & b) ^ m0 ^ v
        return a, b, c

    def arith_triples(self, n: int, ring=64):
        """n random Beaver triples over Z_2^ring (64: uint64, 128: U128): this party's
        (a, b, c), shape (n,), with (a0 + a1)(b0 + b1) = c0 + c1. Both parties call it; a
        Gilboa OLE in each direction at once, 2 rounds."""
        fn = "arith_triples"
        n = _count(n, fn)
        ring = _ring(ring, fn)
        words = ring // 64 * n
        a = self.prg.random_u64(words)
        b = self.prg.random_u64(words)
        s_share, send = self._ole_send_parts(a, ring)
        r_share, local, fix = self._ole_recv_parts(b, ring)
        self._run("ot.arith_triples", words, send=send, reply=self._ole_reply(ring),
                  choice=b, local=local, fix=fix)
        if ring == 64:
            return a, b, a * b + s_share + r_share
        a, b = a.view(U128), b.view(U128)
        c = r128_add(r128_add(r128_mul(a, b), s_share.view(U128)), r_share.view(U128))
        return a, b, c
