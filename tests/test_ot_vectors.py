"""Test vectors for the IKNP OT extension's tweakable hash and outputs (runtime/ot.py,
csrc/ot.c), checked against an independent reference: AES-128 and ChaCha20 from
``cryptography`` (OpenSSL), BLAKE2b from hashlib, the bit transpose in numpy.

H(i, x) = pi(pi(x) ^ i) ^ pi(x), pi = AES-128 under the fixed key 243f6a88..., and OT j
of an IKNP instance hashes under i = (P_lo + j mod 2^64, P_hi), P = BLAKE2b-128
(person "mixc-iknp-tweak") of len(session id) (u32 LE), the session id, tag_base
(u64 LE), the instance (u8), and the instance's base-OT transcript S, R_0 .. R_127.
"""
from __future__ import annotations

import hashlib
import struct
import threading

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mixc.runtime import ot
from mixc.runtime.kernels import Prg
from mixc.runtime.links import InProcessHub
from mixc.runtime.ot import OTSession

U64 = np.uint64
FIXED_KEY = bytes.fromhex("243f6a8885a308d313198a2e03707344")


# ---------------------------------------------------------------------------
# the reference

def aes(blocks):
    enc = Cipher(algorithms.AES(FIXED_KEY), modes.ECB()).encryptor()
    raw = enc.update(np.ascontiguousarray(blocks, dtype="<u8").tobytes()) + enc.finalize()
    return np.frombuffer(raw, dtype="<u8").astype(U64).reshape(-1, 2)


def tccr_ref(rows, tweak, delta=(0, 0)):
    """H(tweak + i, rows[i] ^ delta) by the definition."""
    n = rows.shape[0]
    lo = (np.uint64(tweak[0]) + np.arange(n, dtype=U64))          # wraps mod 2^64
    tweaks = np.stack([lo, np.full(n, tweak[1], dtype=U64)], axis=1)
    p = aes(rows ^ np.array(delta, dtype=U64))
    return aes(p ^ tweaks) ^ p


def chacha_words(key32, stream, pos, n):
    """Keystream words [pos, pos + n) of ChaCha20 (64-bit counter, 64-bit stream id)."""
    nonce = struct.pack("<QQ", pos // 8, stream)
    enc = Cipher(algorithms.ChaCha20(key32, nonce), mode=None).encryptor()
    skip = pos % 8
    raw = enc.update(bytes(8 * (n + skip)))
    return np.frombuffer(raw, dtype="<u8").astype(U64)[skip:]


def transpose_ref(cols):
    bits = np.unpackbits(cols.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    rows = np.packbits(np.ascontiguousarray(bits.T), axis=1, bitorder="little")
    return np.ascontiguousarray(rows).view("<u8").astype(U64)


def prefix_ref(session_id, tag_base, instance, S, Rs):
    h = hashlib.blake2b(digest_size=16, person=b"mixc-iknp-tweak")
    h.update(struct.pack("<I", len(session_id)) + session_id)
    h.update(struct.pack("<QB", tag_base, instance) + S + b"".join(Rs))
    return tuple(int(w) for w in np.frombuffer(h.digest(), dtype="<u8"))


# ---------------------------------------------------------------------------
# hash vectors: (row lo, row hi), (tweak lo, tweak hi) -> H(tweak, row) (lo, hi)

HASH_VECTORS = [
    ((0, 0), (0, 0), (0xbfa87bfa24df58d2, 0x66c5dee17991db8f)),
    ((1, 0), (0, 0), (0xac06d190ce9d2499, 0x4eba55fb5ceb9e4e)),
    ((0, 0), (1, 0), (0x932f549f71a89697, 0x8e027a67cabef0f3)),
    ((0x0123456789abcdef, 0xfedcba9876543210), (2**64 - 1, 0x5a5a5a5a5a5a5a5a),
     (0x617405eb6615defb, 0x00bb7d402a3b8129)),
]


@pytest.mark.parametrize("row, tweak, expect", HASH_VECTORS)
@pytest.mark.parametrize("portable", [False, True])
def test_hash_vectors(row, tweak, expect, portable):
    rows = np.array([row], dtype=U64)
    assert tuple(int(w) for w in tccr_ref(rows, tweak)[0]) == expect
    assert tuple(int(w) for w in ot.ot_hash(rows, tweak, portable=portable)[0]) == expect


def test_hash_row_i_uses_tweak_plus_i():
    """A batch hashes row i under tweak + i: the same as one call per row."""
    rows = np.random.default_rng(5).integers(0, 2**64, size=(37, 2), dtype=U64)
    tweak = (2**64 - 20, 99)
    batch = ot.ot_hash(rows, tweak)
    one_by_one = np.concatenate([ot.ot_hash(rows[i:i + 1], ((tweak[0] + i) % 2**64, tweak[1]))
                                 for i in range(37)])
    assert np.array_equal(batch, one_by_one)
    assert np.array_equal(batch, tccr_ref(rows, tweak))
    same = np.repeat(rows[:1], 37, axis=0)        # one input, 37 tweaks: 37 distinct outputs
    assert len({tuple(r) for r in ot.ot_hash(same, tweak).tolist()}) == 37


def test_hash_rejects_bad_tweak():
    rows = np.zeros((1, 2), dtype=U64)
    for bad in [(1,), (1, 2, 3), (-1, 0), (2**64, 0), (0.5, 0), (True, 0)]:
        with pytest.raises(ValueError, match="tweak"):
            ot.ot_hash(rows, bad)


# ---------------------------------------------------------------------------
# OT output vectors: fixed seeds -> the sessions' outputs, recomputed by the reference

SEEDS = (b"vector-alice".ljust(32, b"."), b"vector-bob".ljust(32, b"."))
SESSION_ID = b"test-vector-session"
TAG_BASE = 1000
# sha256 of the sender's and receiver's outputs of the calls in _run_vector_calls
EXPECT_DIGEST = "4cf3fe718017d338a2e54099b9b200a73cf2f5811c35c1f5f605e1fad3929878"


class Recorder:
    """A link that keeps a copy of every payload this party sends, by tag."""

    def __init__(self, link):
        self.link, self.sent = link, {}

    def send(self, peer, tag, payload, op=None):
        self.sent[tag] = np.array(payload, copy=True)
        self.link.send(peer, tag, payload, op=op)

    def recv(self, peer, tag, op=None):
        return self.link.recv(peer, tag, op=op)


def _run_vector_calls():
    hub = InProcessHub(["alice", "bob"], timeout=30)
    la, lb = Recorder(hub.link("alice")), Recorder(hub.link("bob"))
    sa = OTSession(la, "bob", True, Prg(SEEDS[0]), TAG_BASE, session_id=SESSION_ID)
    sb = OTSession(lb, "alice", False, Prg(SEEDS[1]), TAG_BASE, session_id=SESSION_ID)
    rng = np.random.default_rng(2020)
    c1, c2, c3 = (rng.integers(0, 2, size=n, dtype=U64) for n in (200, 100, 70))
    out = {}

    def alice():
        out["alice"] = [sa.rot_send(200), sa.rot_send(100), sa.cot_send(2**64 - 3, n=70)]

    def bob():
        out["bob"] = [sb.rot_recv(c1), sb.rot_recv(c2), sb.cot_recv(c3)]

    threads = [threading.Thread(target=alice), threading.Thread(target=bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(out) == {"alice", "bob"}, "a party failed"
    return sa, sb, la, lb, (c1, c2, c3), out


def _instance0_reference(sa, sb, la, lb):
    """Instance 0 (alice extension sender, bob extension receiver) by the reference:
    -> a function (pos, choice words, n) -> (m0, m1, m_c) of the OTs at keystream word pos."""
    S = lb.sent[TAG_BASE].tobytes()[1:]                     # bob is instance 0's base sender
    Rs = [bytes(r) for r in la.sent[TAG_BASE + 1]]          # alice's R_j with choices s
    prefix = prefix_ref(SESSION_ID, TAG_BASE, 0, S, Rs)
    s = sa._s
    s_bits = [(int(s[j // 64]) >> (j % 64)) & 1 for j in range(128)]
    keys = lambda arr, j: arr[32 * j:32 * j + 32].tobytes()   # noqa: E731
    for j in range(128):                                    # alice holds k_{s_j} of bob's pair
        assert keys(sa._ks, j) == keys(sb._k1 if s_bits[j] else sb._k0, j)

    def calls(pos, words, n):
        nw = words.size
        t = np.stack([chacha_words(keys(sb._k0, j), 0, pos, nw) for j in range(128)])
        u = t ^ np.stack([chacha_words(keys(sb._k1, j), 0, pos, nw) for j in range(128)]) ^ words
        q = np.stack([chacha_words(keys(sa._ks, j), 0, pos, nw) ^ (u[j] if s_bits[j] else 0)
                      for j in range(128)])
        tw = ((prefix[0] + 64 * pos) % 2**64, prefix[1])
        return (tccr_ref(transpose_ref(q), tw)[:n], tccr_ref(transpose_ref(q), tw, s)[:n],
                tccr_ref(transpose_ref(t), tw)[:n])
    return calls


def _packed(bits):
    words = np.zeros((bits.size + 63) // 64, dtype=U64)
    for i, b in enumerate(bits.tolist()):
        words[i // 64] |= U64(b << (i % 64))
    return words


def test_ot_outputs_match_reference_and_vectors():
    sa, sb, la, lb, (c1, c2, c3), out = _run_vector_calls()
    (m0a, m1a), (m0b, m1b), x = out["alice"]
    (_, mca), (_, mcb), y = out["bob"]
    ref = _instance0_reference(sa, sb, la, lb)
    # each call starts on a 128-word keystream boundary: calls at words 0, 128, 256
    for (m0, m1, mc), pos, c in [((m0a, m1a, mca), 0, c1), ((m0b, m1b, mcb), 128, c2)]:
        r0, r1, rc = ref(pos, _packed(c), c.size)
        assert np.array_equal(m0, r0) and np.array_equal(m1, r1) and np.array_equal(mc, rc)
        assert np.array_equal(mc, np.where(c[:, None] == 1, m1, m0))
    r0, r1, _ = ref(256, _packed(c3), 70)
    assert np.array_equal(x, r0[:, 0])
    assert np.array_equal(y, x + c3 * U64(2**64 - 3))
    digest = hashlib.sha256(b"".join(a.tobytes() for a in (m0a, m1a, m0b, m1b, x, y))).hexdigest()
    assert digest == EXPECT_DIGEST


def test_session_id_and_transcript_change_every_tweak():
    """Another session id gives other outputs from the same seeds (other tweaks)."""
    def run(session_id):
        hub = InProcessHub(["alice", "bob"], timeout=30)
        sa = OTSession(hub.link("alice"), "bob", True, Prg(SEEDS[0]), TAG_BASE, session_id)
        sb = OTSession(hub.link("bob"), "alice", False, Prg(SEEDS[1]), TAG_BASE, session_id)
        res = {}
        threads = [threading.Thread(target=lambda: res.__setitem__("a", sa.rot_send(64))),
                   threading.Thread(target=lambda: res.__setitem__("b", sb.rot_recv(n=64)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return res["a"], sa
    (m0, m1), sa = run(SESSION_ID)
    (n0, n1), sb = run(b"another session")
    assert np.array_equal(sa._ks, sb._ks)                  # same seeds: same base OTs ...
    assert not np.any(np.all(m0 == n0, axis=1))            # ... yet no output in common
    assert not np.any(np.all(m1 == n1, axis=1))
    with pytest.raises(ValueError, match="session_id"):
        OTSession(None, "bob", True, Prg(SEEDS[0]), 0, session_id="text")
