"""A run's fresh session and the pairwise keys its parties share.

Every party of a run draws, once per run, a 32-byte random contribution and an
ephemeral X25519 key pair (libsodium, through PyNaCl) and puts both in its hello
to every peer (``runtime/links.py``):

* the session id is BLAKE2b-256 over the bundle hash, the rendezvous label
  (``mixc run --session``) and every party's (name, contribution) in name order,
  so it is new in every run whose parties are not all replaying an old one;
  its first 8 bytes go into every frame header, so a frame recorded in another
  run is refused;
* the key ``name`` that parties ``a`` and ``b`` share is BLAKE2b-256 keyed with
  a secret extracted from their X25519 shared secret, both public keys and the
  session id, over both party names and ``name``. No key is ever sent.

Whether a public key really is its party's is the transport's business: over
``--tls`` the hello travels inside the mutually authenticated TLS 1.3 channel
whose certificate names the party; over plain TCP nothing authenticates it (a
passive eavesdropper learns no key; an active man in the middle can).
"""
from __future__ import annotations

import hashlib
import os
import struct

from nacl import bindings as _sodium
from nacl.exceptions import RuntimeError as _SodiumError

CONTRIBUTION_BYTES = 32
PUBLIC_KEY_BYTES = 32
SESSION_TAG_BYTES = 8
UNSET_SESSION_TAG = bytes(SESSION_TAG_BYTES)   # a link made without a handshake (tests)


def _framed(*parts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)


class Ephemeral:
    """This party's contribution to the session and its X25519 key pair, for one run."""

    def __init__(self):
        self.contribution = os.urandom(CONTRIBUTION_BYTES)
        self._secret = os.urandom(32)
        self.public = _sodium.crypto_scalarmult_base(self._secret)

    def shared(self, peer_public: bytes) -> bytes:
        """The X25519 shared secret with ``peer_public``; ValueError for a key of small
        order (whose shared secret would be known to anyone)."""
        if len(peer_public) != PUBLIC_KEY_BYTES:
            raise ValueError(f"key-exchange public key of {len(peer_public)} bytes, not 32")
        try:
            return _sodium.crypto_scalarmult(self._secret, peer_public)
        except _SodiumError:
            raise ValueError("key-exchange public key of small order (refused)") from None


def session_id(bundle_hash: bytes, label: bytes, contributions: dict) -> bytes:
    """The 32-byte id of a session: ``contributions`` is {party: its 32 random bytes}."""
    h = hashlib.blake2b(digest_size=32, person=b"mixc-session")
    h.update(_framed(bundle_hash, label))
    for party in sorted(contributions):
        h.update(_framed(party.encode(), contributions[party]))
    return h.digest()


class SessionKeys:
    """One party's view of a session: its id and the secret it shares with each peer.

    ``peers``: {peer: (contribution, public key, X25519 shared secret)}."""

    def __init__(self, party, ephemeral, bundle_hash, label, peers):
        contributions = {p: c for p, (c, _, _) in peers.items()}
        contributions[party] = ephemeral.contribution
        self.party = party
        self.id = session_id(bundle_hash, label, contributions)
        self.tag = self.id[:SESSION_TAG_BYTES]
        self._prk = {}
        for peer, (_, public, shared) in peers.items():
            (_, lo), (_, hi) = sorted([(party, ephemeral.public), (peer, public)])
            self._prk[peer] = hashlib.blake2b(shared + lo + hi + self.id, digest_size=32,
                                              person=b"mixc-kx").digest()

    @property
    def peers(self):
        return sorted(self._prk)

    def pair_key(self, peer, name: str) -> bytes:
        """The 32-byte key ``name`` this party shares with ``peer`` (both derive the same)."""
        lo, hi = sorted([self.party, peer])
        return hashlib.blake2b(_framed(lo.encode(), hi.encode(), name.encode()), digest_size=32,
                               key=self._prk[peer], person=b"mixc-pair-key").digest()


def in_process_sessions(parties, label=b"in-process"):
    """{party: SessionKeys} for parties that are threads of one process: the same
    exchange as over TCP, with the public values handed over in memory."""
    eph = {p: Ephemeral() for p in parties}
    return {p: SessionKeys(p, eph[p], b"", label,
                           {q: (eph[q].contribution, eph[q].public, eph[p].shared(eph[q].public))
                            for q in parties if q != p})
            for p in parties}
