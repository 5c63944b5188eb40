"""Links: how one party's executor exchanges numpy arrays with its peers.

A :class:`Link` is one party's endpoint to all of its peers. The executor
above it is the same whether the parties are threads of one process
(:class:`InProcessHub`, used for simulation and benchmarks) or separate
processes on any hosts (:class:`TcpLink`).

Interface
---------
``send(peer, tag, payload)``
    Queues ``payload`` (a numpy array or ``bytes``) for ``peer`` and returns at
    once: it never waits for the peer. Ownership of an array passes to the
    link: the caller must not modify it afterwards (it may be on the wire, or
    be the receiver's read-only view of it).
``recv(peer, tag, op=None)``
    Blocks until the message ``(peer, tag)`` is there, for at most
    ``link.timeout`` seconds (default 60). Messages are matched by
    ``(peer, tag)``, not by arrival order: early arrivals wait in a dict.
    Arrays keep dtype and shape and come back as a new C-contiguous array
    (read-only for the in-process link); ``bytes`` come back as ``bytes``.
    ``op`` is the name of the op the executor is running; errors name it.
``pair_key(peer, name)``
    The 32-byte key ``name`` this party shares with ``peer``, derived by both
    from the session's key exchange (``runtime/session_keys.py``); never sent.
``session``
    The session id (hex): fresh per run, the same at every party.
``stats()``
    ``{"bytes_sent": {peer: n}, "messages_sent": {peer: n},
    "bytes_received": {peer: n}, "messages_received": {peer: n},
    "bytes_sent_total": n, "bytes_received_total": n}`` -- payload bytes only,
    not headers.
``close()``
    Flushes queued sends (bounded by ``timeout``), says goodbye to every peer
    and closes. Idempotent. Links are context managers.

A tag is an ``int`` in ``[0, 2**64)`` that is unique per (sender, receiver)
pair within a session. Supported dtypes: bool, (u)int8/16/32/64, float16/32/64,
complex64/128.

Errors
------
Every failure that is a peer's fault is a :class:`mixc.errors.PeerError`
naming the peer and the op (``peer 'bob' during mul#12: ...``):

* no message ``(peer, tag)`` within ``timeout`` seconds -> "timed out after
  T s waiting for message tag N";
* the peer's connection broke: EOF without goodbye ("connection closed by peer
  without goodbye"), reset, or a socket error. This is detected by the
  receiver thread the moment the socket reports it, so a ``recv`` blocked on a
  dead peer fails at once, not at the timeout;
* the peer said goodbye (it closed its link) -> "peer finished/closed";
* a frame that does not parse (bad magic, unknown kind or dtype code,
  impossible length, reserved bits set, truncated) -> "malformed frame: ...";
* the same tag arriving twice, or ``recv`` of a tag already received;
* at connection time: wrong party name, different session id, different
  bundle hash (the message says which and shows both values), a
  key-exchange public key of small order;
* a frame whose header carries another session ("frame of another session":
  recorded in an earlier run and replayed);
* in-process only: ``hub.abort(party, reason)`` (the party's thread crashed).

Once a peer has failed, every pending and every future ``recv`` from it fails
with the same reason -- except for messages that had already arrived before
the failure, which are still delivered (a peer that sent its last message and
then closed is not an error for that message). ``send`` to a failed or
finished peer raises the same PeerError.

TCP connection rule
-------------------
For each pair of parties exactly one TCP connection is made: the party whose
name sorts first (Python string order) *connects*, the other *accepts*. A
party therefore listens on its own address only if some peer's name sorts
before its own. Connecting is retried until ``timeout`` (peers start at
slightly different times). A listener accepts only connections whose
handshake names an expected, not yet connected, peer; any other connection
(unknown name, garbage, port scanner) is refused and closed, and the
listener keeps waiting. A session-id or bundle-hash mismatch is refused with
a PeerError on both sides.

Plain TCP (no ``ssl_context``) only between parties on this host: ``connect``
refuses, before any connection, a peer address that is not loopback or an
address of this host, and the listener hangs up on a plain connection from
another host -- unless ``insecure=True`` (``mixc run --insecure``).

Handshake (both directions, on every connection, before any frame)::

    hello   = "MXHS" u16 version(2) u16 len(name) u16 len(session) u16 len(hash)
              name(utf-8) session hash contribution(32) x25519_public_key(32)
    verdict = "MXOK" u8 status(0 ok, 1 refused) u16 len(reason) reason(utf-8)

Each side sends its hello, reads the peer's, checks it, sends its verdict and
reads the peer's verdict, so both sides learn why a connection was refused.
``session`` is the label the parties meet under (``--session``); a party
sends the same random contribution and ephemeral public key to every peer.
Once all peers are connected, the session id is a hash of the bundle hash, the
label and every party's contribution, and each pair's keys come from its X25519
shared secret (``runtime/session_keys.py``). With TLS the hello travels inside
the authenticated channel (the certificate names the party, see below), which
is what authenticates the public keys; over plain TCP nothing does.

Framing (little-endian)::

    header  = "MXFR" u8 kind u8 dtype_code u8 ndim u8 reserved(=0)
              u64 tag u64 payload_length session(8)  (32 bytes)
    dims    = ndim x u64                             (arrays only)
    payload = payload_length bytes (C order)

``session`` is the first 8 bytes of the session id: a frame of another
session fails the peer. kind 1 = array, 2 = bytes, 3 = goodbye (tag 0, no
payload), 4 = abort (tag 0, payload = u16 error code (``ABORT_CODES``) and
the utf-8 name of the op the party failed in -- never the exception's text).
For an array, ``payload_length`` must equal ``prod(dims) * itemsize``.

Threads: per peer, one sender thread fed by a queue (it coalesces queued
frames into one ``sendmsg`` without copying array memory, so two parties
sending 8 MB to each other at the same time cannot deadlock) and one receiver
thread that reads frames -- large payloads straight into a preallocated
``np.empty`` with ``recv_into`` -- into the pending dict and wakes waiters.
A frame of at most 64 KiB sent while nothing is queued is written by the
calling thread itself with ``MSG_DONTWAIT`` (the rest, if any, is queued), to
save a thread hand-off per round. TCP_NODELAY and keep-alive are on; socket
buffers are 4 MiB where the kernel allows it.

Closing: ``close()`` queues a goodbye frame behind the pending sends, waits
(at most ``timeout``) for the sender threads and for the peers' kernels to
acknowledge the data, then shuts the sockets down. A receiver that reads a
goodbye marks that peer finished: messages that arrived before it are still
delivered, later ``recv`` calls fail with "peer finished/closed".

TLS hook: ``ssl_context`` (an ``ssl.SSLContext`` usable for both roles, or a
``(server_context, client_context)`` pair) wraps every socket in
``_wrap_socket`` right after connect/accept, before the handshake. Because
OpenSSL forbids concurrent ``SSL_read``/``SSL_write`` on one connection, TLS
connections use ``_TlsTransport``, which serialises them under a lock over a
non-blocking socket. With ``check_cert_names=True`` (what ``mixc run --tls``
uses; the contexts must then require and verify certificates both ways) a
party's certificate must name the party in its subject commonName: the
dialing side checks it is the peer it meant to reach (else PeerError, as for
a wrong party name); the accepting side closes, before saying anything, a
connection whose certificate names no expected peer, and refuses one whose
hello claims a different party than its certificate (the listener keeps
waiting in both cases).

Aborting: ``abort(code, op)`` (a party that fails) sends each live peer an
abort frame carrying the code and op instead of a goodbye, without waiting
for queued data, and closes; the peer's pending and future ``recv`` fail with
"peer aborted (error <code>: <meaning>, in its <op>; the reason is in its
own log)". ``close()`` returns (and keeps in ``undelivered``)
``{peer: reason}`` for every peer that did not get all queued data -- the
flush timed out, or the connection broke first -- except peers that had
already said goodbye (they needed nothing more).
"""

from __future__ import annotations

import collections
import errno
import math
import select
import socket
import ssl
import struct
import threading
import time

import ipaddress

import numpy as np

from mixc.errors import MixcError, PeerError

from .session_keys import (CONTRIBUTION_BYTES, PUBLIC_KEY_BYTES, UNSET_SESSION_TAG, Ephemeral,
                           SessionKeys, in_process_sessions)

__all__ = ["Link", "InProcessHub", "TcpLink", "PROTOCOL_VERSION", "ABORT_CODES", "abort_code"]

PROTOCOL_VERSION = 2
DEFAULT_TIMEOUT = 60.0

# --------------------------------------------------------------------------
# wire format

_FRAME_MAGIC = b"MXFR"
_HELLO_MAGIC = b"MXHS"
_VERDICT_MAGIC = b"MXOK"
_HEADER = struct.Struct("<4sBBBBQQ8s")        # 32 bytes
_HELLO = struct.Struct("<4sHHHH")
_HELLO_KEYS = CONTRIBUTION_BYTES + PUBLIC_KEY_BYTES
_VERDICT = struct.Struct("<4sBH")
_KIND_ARRAY, _KIND_BYTES, _KIND_GOODBYE, _KIND_ABORT = 1, 2, 3, 4
_MAX_NDIM = 64
_MAX_HELLO_FIELD = 4096
MAX_PAYLOAD = 1 << 36                          # 64 GiB: anything larger is garbage

_DTYPES = {
    1: np.dtype(np.bool_),
    2: np.dtype(np.uint8), 3: np.dtype(np.int8),
    4: np.dtype(np.uint16), 5: np.dtype(np.int16),
    6: np.dtype(np.uint32), 7: np.dtype(np.int32),
    8: np.dtype(np.uint64), 9: np.dtype(np.int64),
    10: np.dtype(np.float16), 11: np.dtype(np.float32), 12: np.dtype(np.float64),
    13: np.dtype(np.complex64), 14: np.dtype(np.complex128),
}
# wire dtypes are little-endian
_DTYPES = {c: d.newbyteorder("<") for c, d in _DTYPES.items()}
_DTYPES[15] = np.dtype([("lo", "<u8"), ("hi", "<u8")])  # a Z_2^128 share (mixc.ir.ops.U128)
_CODES = {d: c for c, d in _DTYPES.items()}
_DIMS = [struct.Struct(f"<{n}Q") for n in range(_MAX_NDIM + 1)]
_GOODBYE_REASON = "peer finished/closed the connection"

# What an abort frame may tell a peer: a code and the op, never the exception's text
# (it may quote a party's data); the full reason stays in the failing party's log.
ABORT_CODES = {1: "bad input", 2: "lost a peer", 3: "numeric error", 4: "refused the program",
               5: "interrupted", 6: "internal error"}
_ABORT = struct.Struct("<H")
_MAX_ABORT_OP = 200


def abort_code(exc):
    """The ABORT_CODES code that tells a peer what kind of failure ``exc`` is."""
    from mixc.errors import InputError, NumericError
    for kind, code in ((InputError, 1), (PeerError, 2), (NumericError, 3), (MixcError, 4),
                       (KeyboardInterrupt, 5)):
        if isinstance(exc, kind):
            return code
    return 6


def _abort_frame(session_tag, code, op):
    op = "".join(c for c in str(op or "") if c.isprintable())[:_MAX_ABORT_OP]
    body = _ABORT.pack(code) + op.encode("utf-8", "replace")
    return _HEADER.pack(_FRAME_MAGIC, _KIND_ABORT, 0, 0, 0, 0, len(body), session_tag) + body


def _abort_reason(body):
    if len(body) < _ABORT.size:
        raise _Malformed("abort frame without a code")
    (code,) = _ABORT.unpack_from(body)
    op = body[_ABORT.size:].decode("utf-8", "replace")
    op = "".join(c for c in op if c.isprintable())[:_MAX_ABORT_OP]
    return (f"peer aborted (error {code}: {ABORT_CODES.get(code, 'unknown')}"
            + (f", in its {op}" if op else "") + "; the reason is in its own log)")


def _prepare(payload):
    """-> (kind, dtype_code, contiguous array or bytes, nbytes)."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data = bytes(payload)  # no copy for bytes; bytearray/memoryview are copied
        return _KIND_BYTES, 0, data, len(data)
    if isinstance(payload, (np.ndarray, np.generic)):
        arr = np.asarray(payload)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        code = _CODES.get(arr.dtype)
        if code is None and arr.dtype.kind in "biufc":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
            code = _CODES.get(arr.dtype)
        if code is None:
            raise TypeError(f"links cannot send arrays of dtype {arr.dtype}")
        return _KIND_ARRAY, code, arr, arr.nbytes
    raise TypeError(f"links send numpy arrays or bytes, not {type(payload).__name__}")


# In-process links hold a sender back while its receiver, busy, already holds this many
# bytes from it (see _InProcessLink._hold_back).
_MAX_PENDING = 64 << 20


def _size(payload):
    return payload.nbytes if isinstance(payload, np.ndarray) else len(payload)


def _check_tag(tag):
    if not isinstance(tag, (int, np.integer)) or isinstance(tag, bool) or not 0 <= tag < 1 << 64:
        raise ValueError(f"message tag must be an int in [0, 2**64), not {tag!r}")
    return int(tag)


def _byte_view(arr):
    """A flat uint8 memoryview of a C-contiguous array (no copy)."""
    return memoryview(arr.reshape(-1).view(np.uint8))


def _readonly(arr):
    """A read-only array sharing ``arr``'s memory that cannot be made writable."""
    if arr.size == 0:
        out = np.empty(arr.shape, arr.dtype)
        out.flags.writeable = False
        return out
    buf = _byte_view(arr).toreadonly()
    return np.frombuffer(buf, dtype=arr.dtype).reshape(arr.shape)


def _show(value: bytes) -> str:
    """A short printable rendering of a session id / bundle hash."""
    try:
        text = value.decode("ascii")
        if text.isprintable():
            return repr(text if len(text) <= 40 else text[:37] + "...")
    except UnicodeDecodeError:
        pass
    h = value.hex()
    return h if len(h) <= 24 else h[:24] + "..."


def _as_bytes(value, what):
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


# --------------------------------------------------------------------------
# the interface and the logic every link shares


class _TagSet:
    """Tags already received from one peer: a low-water mark plus a set."""

    __slots__ = ("low", "above")

    def __init__(self):
        self.low, self.above = 0, set()   # every tag < low has been received

    def __contains__(self, tag):
        return tag < self.low or tag in self.above

    def add(self, tag):
        if tag == self.low:
            self.low += 1
            above = self.above
            while self.low in above:
                above.remove(self.low)
                self.low += 1
        else:
            self.above.add(tag)


class Link:
    """One party's endpoint to all its peers (see the module docstring)."""

    def __init__(self, party, peers, timeout=DEFAULT_TIMEOUT, keys=None):
        self.party = party
        self.peers = tuple(peers)
        self.timeout = float(timeout)
        self._keys = keys                     # SessionKeys, or None: no key exchange
        self.session = keys.id.hex() if keys is not None else ""
        self._peer_set = frozenset(self.peers)
        self._cond = threading.Condition()
        self._pending = {}                                  # (peer, tag) -> payload
        self._pending_bytes = dict.fromkeys(self.peers, 0)  # peer -> bytes waiting here
        self._blocked = False   # our party waits (in recv, or for a peer to take messages)
        self._held = 0          # senders waiting for us to take their messages
        self._awaiting = None   # the (peer, tag) our recv waits for: only its arrival wakes us
        self._received = {p: _TagSet() for p in self.peers}
        self._failed = {}                                   # peer -> reason
        self._closed = False
        self._bytes_sent = dict.fromkeys(self.peers, 0)
        self._msgs_sent = dict.fromkeys(self.peers, 0)
        self._bytes_recv = dict.fromkeys(self.peers, 0)
        self._msgs_recv = dict.fromkeys(self.peers, 0)

    # -- public API ---------------------------------------------------------

    def send(self, peer, tag, payload, op=None):
        """Queue ``payload`` for ``peer`` under ``tag``; never waits for the peer."""
        self._check_peer(peer, op)
        tag = _check_tag(tag)
        kind, code, data, nbytes = _prepare(payload)
        with self._cond:
            if self._closed:
                raise PeerError(peer, f"cannot send tag {tag}: link of {self.party!r} is closed", op=op)
            reason = self._failed.get(peer)
            if reason is not None:
                raise PeerError(peer, f"{reason} (cannot send tag {tag})", op=op)
            self._bytes_sent[peer] += nbytes
            self._msgs_sent[peer] += 1
        self._transmit(peer, tag, kind, code, data, op)

    def recv(self, peer, tag, op=None):
        """Wait (at most ``timeout`` s) for message ``(peer, tag)`` and return it."""
        self._check_peer(peer, op)
        tag = _check_tag(tag)
        key = (peer, tag)
        deadline = None
        with self._cond:
            while True:
                if self._closed:
                    raise PeerError(peer, f"link of {self.party!r} is closed (waiting for tag {tag})", op=op)
                payload = self._pending.pop(key, None)
                if payload is not None:
                    self._received[peer].add(tag)
                    self._pending_bytes[peer] -= _size(payload)
                    self._blocked = False
                    if self._held:
                        self._cond.notify_all()  # a sender held back by _MAX_PENDING may go on
                    return payload
                if tag in self._received[peer]:
                    raise PeerError(peer, f"message tag {tag} was already received", op=op)
                reason = self._failed.get(peer)
                if reason is not None:
                    raise PeerError(peer, f"{reason} (waiting for tag {tag})", op=op)
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.timeout
                elif now >= deadline:
                    raise PeerError(
                        peer, f"timed out after {self.timeout:g} s waiting for message tag {tag}", op=op)
                if not self._blocked:
                    self._blocked = True
                    if self._held:
                        self._cond.notify_all()
                self._awaiting = key
                try:
                    self._cond.wait(deadline - now)
                finally:
                    self._awaiting = None

    def pair_key(self, peer, name):
        """The 32-byte key ``name`` this party shares with ``peer``, derived from the
        session's key exchange (runtime/session_keys.py); no key is ever sent."""
        self._check_peer(peer, "key agreement")
        if self._keys is None:
            raise MixcError(f"the link of {self.party!r} was made without a key exchange")
        return self._keys.pair_key(peer, name)

    def stats(self):
        with self._cond:
            return {
                "bytes_sent": dict(self._bytes_sent),
                "messages_sent": dict(self._msgs_sent),
                "bytes_received": dict(self._bytes_recv),
                "messages_received": dict(self._msgs_recv),
                "bytes_sent_total": sum(self._bytes_sent.values()),
                "bytes_received_total": sum(self._bytes_recv.values()),
            }

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.party!r} peers={list(self.peers)}>"

    # -- for subclasses -----------------------------------------------------

    def _transmit(self, peer, tag, kind, code, data, op):
        raise NotImplementedError

    def _check_peer(self, peer, op):
        if peer not in self._peer_set:
            raise PeerError(peer, f"not a peer of party {self.party!r} (peers: {', '.join(self.peers)})", op=op)

    def _arrive(self, peer, tag, payload, nbytes):
        """Store an arrived message; a duplicate fails the peer. -> accepted?"""
        with self._cond:
            key = (peer, tag)
            if key in self._pending or tag in self._received[peer]:
                self._fail_locked(peer, f"duplicate message tag {tag}")
                return False
            self._pending[key] = payload
            self._pending_bytes[peer] += _size(payload)
            self._bytes_recv[peer] += nbytes
            self._msgs_recv[peer] += 1
            if self._awaiting == key:  # held-back senders wait for fewer bytes, not more
                self._cond.notify_all()
            return True

    def _fail(self, peer, reason):
        with self._cond:
            self._fail_locked(peer, reason)

    def _fail_locked(self, peer, reason):
        if peer not in self._failed:          # the first reason sticks
            self._failed[peer] = reason
        self._cond.notify_all()


# --------------------------------------------------------------------------
# in-process


class _InProcessLink(Link):
    def __init__(self, hub, party, peers, timeout, keys):
        super().__init__(party, peers, timeout, keys)
        self._hub = hub

    def _transmit(self, peer, tag, kind, code, data, op):
        if kind == _KIND_ARRAY:
            nbytes = data.nbytes
            data = _readonly(data)
        else:
            nbytes = len(data)
        dest = self._hub._links[peer]
        if dest._pending_bytes[self.party] > _MAX_PENDING:
            self._hold_back(dest)
        with dest._cond:
            if dest._closed:
                reason = self._hub._aborted.get(peer, "peer finished/closed its link")
                raise PeerError(peer, f"{reason} (cannot send tag {tag})", op=op)
        dest._arrive(self.party, tag, data, nbytes)

    def _hold_back(self, dest):
        """Wait while ``dest`` is busy and holds more than _MAX_PENDING bytes from us.

        A party that only sends (the dealer) would otherwise run a whole loop ahead
        and its messages would pile up in memory. Never while ``dest`` itself waits
        (in recv, or held back by someone): then it may be waiting for what we are
        about to send, so holding back could deadlock; both marks are set under the
        waiting party's own lock and every change is notified."""
        with self._cond:
            self._blocked = True
            self._cond.notify_all()
        try:
            with dest._cond:
                dest._held += 1
                try:
                    while (dest._pending_bytes[self.party] > _MAX_PENDING and not dest._blocked
                           and not dest._closed and self.party not in dest._failed):
                        dest._cond.wait(0.05)
                finally:
                    dest._held -= 1
        finally:
            with self._cond:
                self._blocked = False

    def close(self):
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for peer in self.peers:
            self._hub._links[peer]._fail(self.party, "peer finished/closed its link")


class InProcessHub:
    """Links between parties that are threads of one process.

    ``hub.link(party)`` gives each party its :class:`Link`. Arrays are passed
    without copying as read-only views (they cannot be made writable again),
    so a sender must not modify an array after sending it.
    ``hub.abort(party, reason)`` makes every recv from ``party`` fail
    promptly, e.g. when that party's thread crashed.
    """

    def __init__(self, parties, timeout=DEFAULT_TIMEOUT):
        parties = tuple(parties)
        if len(set(parties)) != len(parties):
            raise ValueError(f"duplicate party names in {parties}")
        self.parties = parties
        self.timeout = float(timeout)
        self._aborted = {}
        keys = in_process_sessions(parties)
        self._links = {p: _InProcessLink(self, p, [q for q in parties if q != p], timeout, keys[p])
                       for p in parties}

    def link(self, party):
        try:
            return self._links[party]
        except KeyError:
            raise ValueError(f"unknown party {party!r} (parties: {', '.join(self.parties)})") from None

    def abort(self, party, reason):
        reason = f"party aborted: {reason}"
        self._aborted.setdefault(party, reason)
        own = self.link(party)
        with own._cond:
            own._closed = True
            own._cond.notify_all()
        for peer, link in self._links.items():
            if peer != party:
                link._fail(party, reason)

    def close(self):
        for link in self._links.values():
            link.close()


# --------------------------------------------------------------------------
# TCP: sockets and transports

_SOCK_BUF = 4 << 20


def _sysctl_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tune(sock):
    """TCP_NODELAY, keep-alive and (where the kernel allows) large buffers."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # On Linux, setting a buffer size switches off autotuning; only do it when
    # the cap lets us ask for more than autotuning would reach anyway.
    for opt, cap in ((socket.SO_SNDBUF, "/proc/sys/net/core/wmem_max"),
                     (socket.SO_RCVBUF, "/proc/sys/net/core/rmem_max")):
        limit = _sysctl_int(cap)
        if limit is None or limit >= _SOCK_BUF:
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, _SOCK_BUF)
            except OSError:
                pass


def _cert_names(sock):
    """The subject commonNames of a TLS peer's (verified) certificate; () if none."""
    try:
        cert = sock.getpeercert()
    except (AttributeError, ValueError, OSError):
        return ()
    if not cert:
        return ()
    return tuple(value for rdn in cert.get("subject", ()) for key, value in rdn
                 if key == "commonName")


def _wrap_socket(sock, ssl_context, server_side, host):
    """The one place where sockets get TLS (None: plain TCP)."""
    if ssl_context is None:
        return sock
    if isinstance(ssl_context, (tuple, list)):
        ssl_context = ssl_context[0 if server_side else 1]
    if server_side:
        return ssl_context.wrap_socket(sock, server_side=True)
    return ssl_context.wrap_socket(sock, server_side=False, server_hostname=host)


_MSG_DONTWAIT_OK = hasattr(socket, "MSG_DONTWAIT") and hasattr(socket.socket, "sendmsg")


class _PlainTransport:
    """Blocking socket; scatter-gather sends."""

    def __init__(self, sock):
        self.sock = sock
        self.recv_into = sock.recv_into

    def sendv(self, bufs):
        sock = self.sock
        bufs = [b for b in bufs if len(b)]
        i = 0
        while i < len(bufs):
            n = sock.sendmsg(bufs[i:i + 512])
            while n:
                size = len(bufs[i])
                if n >= size:
                    n -= size
                    i += 1
                else:
                    bufs[i] = memoryview(bufs[i])[n:]
                    n = 0

    if _MSG_DONTWAIT_OK:
        def try_sendv(self, bufs):
            """Write what the kernel takes now, never blocking. -> rest or None."""
            sock = self.sock
            bufs = [b for b in bufs if len(b)]
            i = 0
            while i < len(bufs):
                try:
                    n = sock.sendmsg(bufs[i:], (), socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    n = 0
                if not n:
                    return bufs[i:]
                while n:
                    size = len(bufs[i])
                    if n >= size:
                        n -= size
                        i += 1
                    else:
                        bufs[i] = memoryview(bufs[i])[n:]
                        n = 0
            return None

    def shutdown(self, how):
        try:
            self.sock.shutdown(how)
        except OSError:
            pass


class _TlsTransport:
    """An SSLSocket used by a sender and a receiver thread.

    OpenSSL forbids concurrent SSL_read/SSL_write on one connection, so every
    SSL call is made under a lock on a non-blocking socket, and the threads
    wait for readiness with ``select`` outside the lock.
    """

    _CHUNK = 1 << 18

    def __init__(self, sock):
        self.sock = sock
        self._lock = threading.Lock()
        self._down = False
        sock.setblocking(False)

    def _wait(self, readable):
        if self._down:
            raise ConnectionAbortedError(errno.ECONNABORTED, "link closed")
        r, w = ([self.sock], []) if readable else ([], [self.sock])
        try:
            select.select(r, w, [], 0.5)
        except (OSError, ValueError):
            raise ConnectionAbortedError(errno.ECONNABORTED, "socket closed") from None

    def recv_into(self, mv):
        while True:
            with self._lock:
                try:
                    return self.sock.recv_into(mv)
                except ssl.SSLWantReadError:
                    readable = True
                except ssl.SSLWantWriteError:
                    readable = False
                except ssl.SSLEOFError:
                    return 0
            self._wait(readable)

    def sendv(self, bufs):
        # join runs of small buffers so a frame is not split over TLS records
        out, small = [], []
        for b in bufs:
            if len(b) < 65536:
                small.append(bytes(b))
                continue
            if small:
                out.append(b"".join(small))
                small = []
            out.append(b)
        if small:
            out.append(b"".join(small))
        for buf in out:
            mv = memoryview(buf).cast("B")
            while len(mv):
                with self._lock:
                    try:
                        n = self.sock.send(mv[:self._CHUNK])
                        readable = None
                    except ssl.SSLWantWriteError:
                        n, readable = 0, False
                    except ssl.SSLWantReadError:
                        n, readable = 0, True
                if n:
                    mv = mv[n:]
                else:
                    self._wait(readable)

    def shutdown(self, how):
        if how == socket.SHUT_RDWR:
            self._down = True
        try:
            # the plain socket's shutdown: SSLSocket.shutdown would drop the
            # SSL object under the receiver thread's feet
            socket.socket.shutdown(self.sock, how)
        except (OSError, ValueError):
            pass


def _outq(sock):
    """Bytes in the kernel send queue not yet acknowledged (Linux), or None."""
    try:
        import fcntl
        import termios
        tcp_info = getattr(socket, "TCP_INFO", None)
        if tcp_info is not None and sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0] == 7:
            return None                 # TCP_CLOSE (reset): nothing will be acked
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]
    except (ImportError, OSError, ValueError, AttributeError):
        return None


class _EOF(Exception):
    pass


class _Malformed(Exception):
    pass


class _OtherSession(Exception):
    pass


class _Reader:
    """Buffered frame reading: small frames in few syscalls, big payloads direct."""

    def __init__(self, recv_into, size=1 << 18):
        self._recv_into = recv_into
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        self._lo = self._hi = 0

    def _fill(self, n):
        if self._hi - self._lo >= n:
            return
        if self._lo + n > len(self._buf):
            k = self._hi - self._lo
            self._mv[:k] = self._mv[self._lo:self._hi]
            self._lo, self._hi = 0, k
        while self._hi - self._lo < n:
            got = self._recv_into(self._mv[self._hi:])
            if not got:
                raise _EOF(self._hi - self._lo)
            self._hi += got

    def unpack(self, st):
        self._fill(st.size)
        out = st.unpack_from(self._mv, self._lo)
        self._lo += st.size
        return out

    def read_into(self, dest):
        """Fill memoryview ``dest`` completely. Raises _EOF(bytes_read)."""
        n = len(dest)
        k = min(n, self._hi - self._lo)
        if k:
            dest[:k] = self._mv[self._lo:self._lo + k]
            self._lo += k
        pos = k
        while pos < n:
            rest = n - pos
            if rest < len(self._buf) // 2:
                self._lo = self._hi = 0
                try:
                    self._fill(rest)
                except _EOF as e:
                    raise _EOF(pos + e.args[0]) from None
                dest[pos:] = self._mv[:rest]
                self._lo = rest
                return
            got = self._recv_into(dest[pos:])
            if not got:
                raise _EOF(pos)
            pos += got


def _recv_exact(sock, n):
    """Read exactly n bytes during the handshake (nothing more)."""
    buf = bytearray(n)
    mv = memoryview(buf)
    pos = 0
    while pos < n:
        got = sock.recv_into(mv[pos:])
        if not got:
            raise _EOF(pos)
        pos += got
    return bytes(buf)


# --------------------------------------------------------------------------
# handshake


class _HandshakeError(Exception):
    """The other end is not a mixc party speaking our protocol."""


def _hello_bytes(party, session, bundle_hash, ephemeral, version=PROTOCOL_VERSION):
    name = party.encode()
    return _HELLO.pack(_HELLO_MAGIC, version, len(name), len(session), len(bundle_hash)) + \
        name + session + bundle_hash + ephemeral.contribution + ephemeral.public


def _read_hello(sock):
    try:
        magic, version, ln, ls, lh = _HELLO.unpack(_recv_exact(sock, _HELLO.size))
    except _EOF:
        raise _HandshakeError("connection closed during the handshake") from None
    if magic != _HELLO_MAGIC:
        raise _HandshakeError(f"not a mixc party (bad handshake magic {magic!r})")
    if version != PROTOCOL_VERSION:
        raise _HandshakeError(f"speaks link protocol version {version}, we speak {PROTOCOL_VERSION}")
    if max(ln, ls, lh) > _MAX_HELLO_FIELD:
        raise _HandshakeError("malformed handshake (field too long)")
    try:
        rest = _recv_exact(sock, ln + ls + lh + _HELLO_KEYS)
    except _EOF:
        raise _HandshakeError("connection closed during the handshake") from None
    try:
        name = rest[:ln].decode()
    except UnicodeDecodeError:
        raise _HandshakeError("malformed handshake (party name is not utf-8)") from None
    end = ln + ls + lh
    contribution, public = rest[end:end + CONTRIBUTION_BYTES], rest[end + CONTRIBUTION_BYTES:]
    return name, rest[ln:ln + ls], rest[ln + ls:end], contribution, public


def _verdict_bytes(reason=None):
    text = (reason or "").encode()[:_MAX_HELLO_FIELD]
    return _VERDICT.pack(_VERDICT_MAGIC, 1 if reason else 0, len(text)) + text


def _read_verdict(sock):
    """-> None if the peer accepted, else its reason."""
    try:
        magic, status, ln = _VERDICT.unpack(_recv_exact(sock, _VERDICT.size))
        if magic != _VERDICT_MAGIC or ln > _MAX_HELLO_FIELD:
            raise _HandshakeError("malformed handshake verdict")
        reason = _recv_exact(sock, ln).decode(errors="replace")
    except _EOF:
        raise _HandshakeError("connection closed during the handshake") from None
    if status == 0:
        return None
    return reason or "refused"


def _mismatch(session, bundle_hash, peer_session, peer_hash):
    """-> reason the peer's session/bundle is not ours, or None (the bundle first: a
    session id derived from the bundle hash differs whenever the bundles do)."""
    if peer_hash != bundle_hash:
        return (f"bundle hash mismatch: peer runs bundle {_show(peer_hash)}, this party "
                f"{_show(bundle_hash)} (the parties were built from different bundles)")
    if peer_session != session:
        return (f"session id mismatch: peer is in session {_show(peer_session)}, "
                f"this party in {_show(session)} (a party from another run?)")
    return None


def listen(party, host, port):
    """A socket of ``party`` listening on ``host:port`` (port 0: any free port)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, stype, proto, _, addr = infos[0]
    sock = socket.socket(family, stype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _tune(sock)  # accepted sockets inherit the buffer sizes
        sock.bind(addr)
        sock.listen(64)
    except OSError as e:
        sock.close()
        raise PeerError(party, f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class _Connector:
    """Establishes one handshaken socket per peer (see the connection rule)."""

    def __init__(self, party, addresses, session, bundle_hash, timeout, ssl_context,
                 check_cert_names=False, listener=None, insecure=False):
        self.party = party
        self.plain_from_anywhere = ssl_context is not None or insecure
        self.listener = listener
        self.addresses = addresses
        self.session, self.bundle_hash = session, bundle_hash
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.check_cert_names = bool(check_cert_names) and ssl_context is not None
        self.peers = tuple(sorted(p for p in addresses if p != party))
        self.dial = [p for p in self.peers if party < p]
        self.accept = frozenset(p for p in self.peers if p < party)
        self.ephemeral = Ephemeral()
        self.hello = _hello_bytes(party, session, bundle_hash, self.ephemeral)
        self.cond = threading.Condition()
        self.socks = {}
        self.exchanged = {}      # peer -> (contribution, public key, X25519 shared secret)
        self.claimed = set()
        self.error = None
        self.stopped = False
        self.notes = {}          # peer -> last problem, for the timeout message
        self.refused = []        # connections from unexpected parties
        self.deadline = time.monotonic() + timeout

    def _remaining(self):
        return self.deadline - time.monotonic()

    def _done(self):
        return self.stopped or self.error is not None or self._remaining() <= 0

    def _set_error(self, err):
        with self.cond:
            if self.error is None:
                self.error = err
            self.cond.notify_all()

    def _register(self, peer, sock, exchanged):
        with self.cond:
            if self.stopped or self.error is not None or peer in self.socks:
                keep = False
            else:
                self.socks[peer] = sock
                self.exchanged[peer] = exchanged
                keep = True
            self.cond.notify_all()
        if not keep:
            _close_quietly(sock)

    def run(self):
        listener = self.listener
        threads = []
        try:
            if self.accept:
                if listener is None:
                    listener = listen(self.party, *self.addresses[self.party])
                listener.settimeout(0.1)
                t = threading.Thread(target=self._accept_loop, args=(listener,),
                                     name=f"mixc-accept-{self.party}", daemon=True)
                t.start()
                threads.append(t)
            for peer in self.dial:
                t = threading.Thread(target=self._dial, args=(peer,),
                                     name=f"mixc-dial-{self.party}-{peer}", daemon=True)
                t.start()
                threads.append(t)
            with self.cond:
                while self.error is None and len(self.socks) < len(self.peers):
                    remaining = self._remaining()
                    if remaining <= 0:
                        break
                    self.cond.wait(remaining)
                self.stopped = True
                error, socks, exchanged = self.error, dict(self.socks), dict(self.exchanged)
        finally:
            with self.cond:
                self.stopped = True
            if listener is not None:
                try:
                    listener.shutdown(socket.SHUT_RDWR)   # wakes a blocked accept()
                except OSError:
                    pass
        for t in threads:
            t.join(1.0)
        if listener is not None:
            _close_quietly(listener)
        if error is None and len(socks) < len(self.peers):
            missing = [p for p in self.peers if p not in socks]
            error = PeerError(missing[0], self._timeout_message(missing))
        if error is not None:
            for s in socks.values():
                _close_quietly(s)
            raise error
        return socks, exchanged

    def _check(self, peer_session, peer_hash, contribution, public):
        """-> (reason the peer's hello is refused or None, the key exchange with it)."""
        mismatch = _mismatch(self.session, self.bundle_hash, peer_session, peer_hash)
        if mismatch:
            return mismatch, None
        try:
            return None, (contribution, public, self.ephemeral.shared(public))
        except ValueError as e:
            return str(e), None

    def _timeout_message(self, missing):
        peer = missing[0]
        host, port = self.addresses[peer]
        if peer in self.accept:
            me = self.addresses[self.party]
            msg = (f"did not connect to this party at {me[0]}:{me[1]} within {self.timeout:g} s "
                   f"(it connects, since {peer!r} sorts before {self.party!r})")
        else:
            msg = f"could not connect to {host}:{port} within {self.timeout:g} s"
        note = self.notes.get(peer)
        if note:
            msg += f" (last error: {note})"
        if self.refused:
            msg += f"; refused connections: {'; '.join(self.refused[-3:])}"
        if len(missing) > 1:
            msg += f"; also missing: {', '.join(missing[1:])}"
        return msg


    # -- accepting side ------------------------------------------------------

    def _accept_loop(self, listener):
        while True:
            with self.cond:
                if self._done() or len(self.socks) == len(self.peers):
                    return
            try:
                conn, addr = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._accept_one, args=(conn, addr),
                             name=f"mixc-handshake-{self.party}", daemon=True).start()

    def _accept_one(self, conn, addr):
        name = None
        claimed = False
        try:
            if not self.plain_from_anywhere and not on_this_host(addr[0]):
                # say nothing: plain TCP from another host is refused (see TcpLink.connect)
                raise _HandshakeError("plain TCP from another host refused (no --tls)")
            conn.settimeout(max(0.05, self._remaining()))
            _tune(conn)
            conn = _wrap_socket(conn, self.ssl_context, True, None)
            certified = None
            if self.check_cert_names:
                certified = _cert_names(conn)
                if not any(n in self.accept for n in certified):
                    # a certificate of no expected peer: say nothing, hang up
                    raise _HandshakeError(f"TLS certificate names {list(certified)}, not a peer "
                                          f"this party accepts ({sorted(self.accept)})")
            conn.sendall(self.hello)
            name, peer_session, peer_hash, contribution, public = _read_hello(conn)
            with self.cond:
                if certified is not None and name not in certified:
                    refusal = (f"hello claims party {name!r} but its TLS certificate names "
                               f"{list(certified)}")
                elif name not in self.accept:
                    refusal = f"unexpected party {name!r} (expected one of {sorted(self.accept)})"
                elif name in self.socks or name in self.claimed:
                    refusal = f"party {name!r} is already connected"
                else:
                    refusal = None
                    self.claimed.add(name)
                    claimed = True
            if refusal is not None:
                self.refused.append(f"{addr[0]}:{addr[1]}: {refusal}")
                _send_quietly(conn, _verdict_bytes(refusal))
                _close_quietly(conn)
                return
            mismatch, exchanged = self._check(peer_session, peer_hash, contribution, public)
            if mismatch:
                _send_quietly(conn, _verdict_bytes(mismatch))
                _close_quietly(conn)
                self._set_error(PeerError(name, mismatch))
                return
            conn.sendall(_verdict_bytes())
            reason = _read_verdict(conn)
            if reason is not None:
                _close_quietly(conn)
                self._set_error(PeerError(name, f"refused the connection: {reason}"))
                return
            conn.settimeout(None)
            self._register(name, conn, exchanged)
        except (OSError, _HandshakeError, ValueError) as e:
            # junk, a port scanner, or a peer that went away mid-handshake:
            # drop the connection and keep listening
            self.refused.append(f"{addr[0]}:{addr[1]}: {e}")
            if name is not None:
                self.notes[name] = str(e)
            _close_quietly(conn)
        finally:
            if claimed:
                with self.cond:
                    self.claimed.discard(name)

    # -- connecting side -----------------------------------------------------

    def _dial(self, peer):
        host, port = self.addresses[peer]
        delay = 0.02
        while True:
            with self.cond:
                if self._done():
                    return
            sock = None
            try:
                sock = _connect_once(host, port, min(2.0, max(0.05, self._remaining())))
                sock.settimeout(max(0.05, self._remaining()))
                sock = _wrap_socket(sock, self.ssl_context, False, host)
                if self.check_cert_names:
                    certified = _cert_names(sock)
                    if peer not in certified:
                        raise PeerError(peer, f"the TLS certificate at {host}:{port} names "
                                              f"{list(certified)}, not {peer!r}")
                sock.sendall(self.hello)
                try:
                    name, peer_session, peer_hash, contribution, public = _read_hello(sock)
                except _HandshakeError as e:
                    if "closed during" in str(e):
                        raise ConnectionResetError(str(e)) from None
                    raise PeerError(peer, f"at {host}:{port}: {e}") from None
                if name != peer:
                    problem = f"expected party {peer!r} at {host}:{port} but found party {name!r}"
                    _send_quietly(sock, _verdict_bytes(problem))
                    raise PeerError(peer, problem)
                mismatch, exchanged = self._check(peer_session, peer_hash, contribution, public)
                if mismatch:
                    _send_quietly(sock, _verdict_bytes(mismatch))
                    raise PeerError(peer, mismatch)
                sock.sendall(_verdict_bytes())
                reason = _read_verdict(sock)
                if reason is not None:
                    raise PeerError(peer, f"refused the connection: {reason}")
                sock.settimeout(None)
                self._register(peer, sock, exchanged)
                return
            except ssl.SSLCertVerificationError as e:
                # the peer's certificate is not from our CA: retrying will not help
                _close_quietly(sock)
                self._set_error(PeerError(peer, f"at {host}:{port}: TLS certificate rejected: "
                                                f"{e.verify_message or e}"))
                return
            except PeerError as e:
                _close_quietly(sock)
                self._set_error(e)
                return
            except (OSError, _HandshakeError) as e:
                # not up yet (refused), or went away mid-handshake: retry
                _close_quietly(sock)
                self.notes[peer] = getattr(e, "strerror", None) or str(e) or type(e).__name__
                time.sleep(min(delay, max(0.0, self._remaining())))
                delay = min(delay * 2, 0.25)


def on_this_host(host):
    """Whether every address ``host`` resolves to is loopback or one of this host's own
    (one a socket can bind to); False if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    for family, stype, proto, _, addr in infos:
        try:
            if ipaddress.ip_address(addr[0].split("%")[0]).is_loopback:
                continue
        except ValueError:
            return False
        try:
            with socket.socket(family, stype, proto) as probe:
                probe.bind((addr[0], 0) + tuple(addr[2:]))
        except OSError:
            return False
    return bool(infos)


def _refuse_plain_tcp_off_host(party, addresses):
    for peer, (host, port) in sorted(addresses.items()):
        if peer != party and not on_this_host(host):
            raise MixcError(
                f"plain TCP to peer {peer!r} at {host}:{port}, not on this host, would let the "
                "network read every message: use --tls KEYDIR (made by mixc keygen), or "
                "--insecure to run over plain TCP anyway")


def _connect_once(host, port, timeout):
    err = None
    for family, stype, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, stype, proto)
        try:
            _tune(sock)  # before connect, so the window scale covers the buffer
            sock.settimeout(timeout)
            sock.connect(addr)
            return sock
        except OSError as e:
            err = e
            sock.close()
    raise err or OSError(f"cannot resolve {host}")


def _close_quietly(sock):
    if sock is None:
        return
    try:
        sock.close()
    except OSError:
        pass


def _send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass


# --------------------------------------------------------------------------
# TCP link

_STOP = object()
_QUIT = object()          # abort: the sender thread exits without a goodbye


_DIRECT_MAX = 1 << 16   # larger frames always go through the sender thread


class _Conn:
    """Per-peer state: the socket and the send queue its sender thread drains."""

    __slots__ = ("peer", "sock", "transport", "cv", "items", "busy", "sender", "receiver",
                 "delivered", "said_goodbye")


class TcpLink(Link):
    """A party's link to peers in other processes over TCP (one socket per pair).

    Build it with :meth:`TcpLink.connect`.
    """

    @classmethod
    def connect(cls, party, addresses, session, bundle_hash, timeout=DEFAULT_TIMEOUT,
                ssl_context=None, check_cert_names=False, listener=None, insecure=False):
        """Listen/connect per the connection rule, handshake, and return the link.

        ``addresses``: ``{party: (host, port)}`` for every party, this one
        included. ``session`` and ``bundle_hash``: bytes (or str) that every
        party must agree on. Raises PeerError if a peer is not there within
        ``timeout`` seconds or refuses (wrong name, session, bundle hash).
        ``check_cert_names``: with TLS, each peer's certificate must name it
        (see the module docstring). ``listener``: a socket already listening
        on this party's address (``mixc run --local`` binds them all before
        starting any party, so no other connection can take the port
        meanwhile); it is closed once the peers are connected.

        Without ``ssl_context``, a peer whose address is not on this host is refused
        (MixcError, before any connection) unless ``insecure``; so is a plain
        connection accepted from another host. ``session`` is the label the parties
        meet under; the session itself is fresh (``runtime/session_keys.py``).
        """
        if party not in addresses:
            raise ValueError(f"party {party!r} has no address in {sorted(addresses)}")
        addresses = {p: (h, int(port)) for p, (h, port) in addresses.items()}
        if ssl_context is None and not insecure:
            _refuse_plain_tcp_off_host(party, addresses)
        session = _as_bytes(session, "session")
        bundle_hash = _as_bytes(bundle_hash, "bundle_hash")
        connector = _Connector(party, addresses, session, bundle_hash, float(timeout),
                               ssl_context, check_cert_names, listener, insecure)
        socks, exchanged = connector.run()
        keys = SessionKeys(party, connector.ephemeral, bundle_hash, session, exchanged)
        return cls(party, socks, timeout, keys)

    def __init__(self, party, socks, timeout=DEFAULT_TIMEOUT, keys=None):
        """``socks``: {peer: connected, handshaken socket}; use :meth:`connect` (without
        ``keys``, from the handshake, frames carry no session and there are no pair keys)."""
        super().__init__(party, sorted(socks), timeout, keys)
        self._session_tag = keys.tag if keys is not None else UNSET_SESSION_TAG
        self._goodbye = _HEADER.pack(_FRAME_MAGIC, _KIND_GOODBYE, 0, 0, 0, 0, 0,
                                     self._session_tag)
        self._closing = False
        self._close_lock = threading.Lock()
        self.undelivered = {}
        self._conns = {}
        for peer, sock in socks.items():
            c = _Conn()
            c.peer, c.sock = peer, sock
            c.transport = _TlsTransport(sock) if isinstance(sock, ssl.SSLSocket) \
                else _PlainTransport(sock)
            c.cv = threading.Condition(threading.Lock())
            c.items = collections.deque()
            c.busy = False
            c.delivered = False     # the goodbye (so everything before it) was written
            c.said_goodbye = False  # the peer's goodbye was read: it finished first
            c.sender = threading.Thread(target=self._send_loop, args=(c,),
                                        name=f"mixc-send-{party}-{peer}", daemon=True)
            c.receiver = threading.Thread(target=self._recv_loop, args=(c,),
                                          name=f"mixc-recv-{party}-{peer}", daemon=True)
            self._conns[peer] = c
        for c in self._conns.values():
            c.sender.start()
            c.receiver.start()

    # -- sending -------------------------------------------------------------
    #
    # Frames are written in queue order by whoever holds ``c.busy``: normally
    # the sender thread, which blocks in sendmsg as long as it must. As a
    # shortcut, when nothing is queued or being written, the calling thread
    # writes the frame itself with MSG_DONTWAIT (never blocking) and queues
    # whatever the kernel did not take -- this saves a thread hand-off for
    # the small messages of many-round protocols.

    def _transmit(self, peer, tag, kind, code, data, op):
        if kind == _KIND_ARRAY:
            header = _HEADER.pack(_FRAME_MAGIC, kind, code, data.ndim, 0, tag, data.nbytes,
                                  self._session_tag)
            if data.ndim:
                header += _DIMS[data.ndim].pack(*data.shape)
            item = [header, _byte_view(data)] if data.nbytes else [header]
        else:
            header = _HEADER.pack(_FRAME_MAGIC, kind, 0, 0, 0, tag, len(data), self._session_tag)
            item = [header, data] if data else [header]
        c = self._conns[peer]
        direct = getattr(c.transport, "try_sendv", None)
        with c.cv:
            if direct is None or c.busy or c.items or len(item[-1]) > _DIRECT_MAX:
                c.items.append(item)
                c.cv.notify()
                return
            c.busy = True
        try:
            rest = direct(item)
        except (OSError, ValueError) as e:
            rest = None
            if not self._closing:
                self._fail(peer, _describe_socket_error(e, "sending"))
        with c.cv:
            if rest:
                c.items.appendleft(rest)
            c.busy = False
            c.cv.notify()

    def _send_loop(self, c):
        transport = c.transport
        try:
            while True:
                with c.cv:
                    while c.busy or not c.items:
                        c.cv.wait()
                    if c.items[0] is _QUIT:
                        return
                    c.busy = True
                    bufs = []
                    size = 0
                    stop = False
                    while c.items and len(bufs) < 512 and size < (1 << 20):
                        item = c.items.popleft()
                        if item is _STOP:
                            bufs.append(self._goodbye)
                            stop = True
                            break
                        bufs.extend(item)
                        size += sum(len(b) for b in item)
                try:
                    transport.sendv(bufs)
                finally:
                    with c.cv:
                        c.busy = False
                if stop:
                    c.delivered = True
                    transport.shutdown(socket.SHUT_WR)
                    return
        except (OSError, ValueError) as e:
            if not self._closing:
                self._fail(c.peer, _describe_socket_error(e, "sending"))

    # -- receiving -----------------------------------------------------------

    def _recv_loop(self, c):
        reader = _Reader(c.transport.recv_into)
        peer = c.peer
        session_tag = self._session_tag
        try:
            while True:
                try:
                    magic, kind, code, ndim, reserved, tag, length, frame_session = \
                        reader.unpack(_HEADER)
                except _EOF as e:
                    if e.args[0] == 0:
                        raise _EOF("boundary") from None
                    raise _Malformed(f"truncated header ({e.args[0]} of {_HEADER.size} bytes, "
                                     "then the connection closed)") from None
                if magic != _FRAME_MAGIC:
                    raise _Malformed(f"bad magic {magic!r}")
                if reserved:
                    raise _Malformed(f"reserved header byte is {reserved}, not 0")
                if frame_session != session_tag:
                    raise _OtherSession(f"frame of another session ({frame_session.hex()}, this "
                                        f"one is {session_tag.hex()}): a replay of another "
                                        "run's traffic? refused")
                if kind == _KIND_GOODBYE:
                    if tag or length or ndim or code:
                        raise _Malformed("goodbye frame with a payload")
                    c.said_goodbye = True
                    self._fail(peer, _GOODBYE_REASON)
                    return
                if kind == _KIND_ABORT:
                    if tag or ndim or code or length > _MAX_HELLO_FIELD:
                        raise _Malformed("malformed abort frame")
                    buf = bytearray(length)
                    if length:
                        self._read_payload(reader, memoryview(buf), tag)
                    self._fail(peer, _abort_reason(bytes(buf)))
                    return
                if kind == _KIND_ARRAY:
                    dtype = _DTYPES.get(code)
                    if dtype is None:
                        raise _Malformed(f"unknown dtype code {code}")
                    if ndim > _MAX_NDIM:
                        raise _Malformed(f"impossible ndim {ndim}")
                    shape = reader.unpack(_DIMS[ndim]) if ndim else ()
                    count = math.prod(shape)
                    if count * dtype.itemsize != length:
                        raise _Malformed(f"impossible length: shape {shape} of {dtype} is "
                                         f"{count * dtype.itemsize} bytes, header says {length}")
                    if length > MAX_PAYLOAD:
                        raise _Malformed(f"impossible length {length}")
                    out = np.empty(shape, dtype)
                    if length:
                        self._read_payload(reader, _byte_view(out), tag)
                elif kind == _KIND_BYTES:
                    if code or ndim:
                        raise _Malformed("bytes frame with a dtype or shape")
                    if length > MAX_PAYLOAD:
                        raise _Malformed(f"impossible length {length}")
                    buf = bytearray(length)
                    if length:
                        self._read_payload(reader, memoryview(buf), tag)
                    out = bytes(buf)
                else:
                    raise _Malformed(f"unknown frame kind {kind}")
                if not self._arrive(peer, tag, out, length):
                    return
        except _EOF:
            if not self._closing:
                self._fail(peer, "connection closed by peer without goodbye (did it crash?)")
        except _Malformed as e:
            if not self._closing:
                self._fail(peer, f"malformed frame: {e}")
        except _OtherSession as e:
            if not self._closing:
                self._fail(peer, str(e))
        except (OSError, ValueError) as e:
            if not self._closing:
                self._fail(peer, _describe_socket_error(e, "receiving"))

    @staticmethod
    def _read_payload(reader, dest, tag):
        try:
            reader.read_into(dest)
        except _EOF as e:
            raise _Malformed(f"truncated payload of tag {tag} ({e.args[0]} of {len(dest)} "
                             "bytes, then the connection closed)") from None

    # -- closing -------------------------------------------------------------

    def _mark_closed(self):
        """False if close or abort already ran: they are idempotent."""
        with self._cond:
            if self._closed:
                return False
            self._closed = True
            self._cond.notify_all()
        return True

    def close(self):
        """Flush queued sends (bounded by timeout), say goodbye, close. Idempotent."""
        with self._close_lock:
            if not self._mark_closed():
                return
            deadline = time.monotonic() + self.timeout
            for c in self._conns.values():
                with c.cv:
                    c.items.append(_STOP)
                    c.cv.notify()
            for c in self._conns.values():
                c.sender.join(max(0.0, deadline - time.monotonic()))
            # wait until each peer's kernel acknowledged everything we wrote, so
            # that closing cannot turn into a reset that discards it (not needed
            # once the peer has said goodbye or failed: it reads no more)
            for c in self._conns.values():
                while time.monotonic() < deadline:
                    with self._cond:
                        if c.peer in self._failed:
                            break
                    if not _outq(c.sock):
                        break
                    time.sleep(0.001)
            for c in self._conns.values():
                if not c.delivered:
                    # our goodbye failed: the connection is gone, so the receiver
                    # ends soon; let it read what already arrived (a goodbye?) first.
                    # It may lag the sender's broken pipe on a loaded machine.
                    c.receiver.join(max(0.0, min(2.0, deadline - time.monotonic())))
            undelivered = {}
            with self._cond:
                for c in self._conns.values():
                    reason = self._failed.get(c.peer)
                    if c.said_goodbye:
                        continue          # it finished first: it needed nothing more
                    if not c.delivered:
                        undelivered[c.peer] = (
                            f"{reason} (before all queued messages were sent)" if reason else
                            f"timed out after {self.timeout:g} s sending queued messages")
                    elif reason is None and _outq(c.sock):
                        undelivered[c.peer] = (f"timed out after {self.timeout:g} s waiting for "
                                               "the peer to acknowledge the last messages")
            self.undelivered = undelivered
            self._closing = True
            for c in self._conns.values():
                c.transport.shutdown(socket.SHUT_RDWR)
            for c in self._conns.values():
                c.receiver.join(1.0)
                c.sender.join(0.1)
                _close_quietly(c.sock)
            return undelivered

    def abort(self, code, op=None):
        """Tell every live peer this party failed -- ``code`` (ABORT_CODES) and the ``op``
        it failed in, nothing else -- and close at once. Idempotent."""
        with self._close_lock:
            if not self._mark_closed():
                return
            self._closing = True
            frame = _abort_frame(self._session_tag, code, op)
            writers = []
            for c in self._conns.values():
                with c.cv:
                    c.items.clear()          # drop what was queued: the run is over
                    c.items.append(_QUIT)
                    c.cv.notify()
                    if c.busy:
                        continue             # mid-frame: no abort frame
                    c.busy = True            # keep the sender thread off the socket
                t = threading.Thread(target=_send_quietly_v, args=(c.transport, frame),
                                     daemon=True, name=f"mixc-abort-{self.party}-{c.peer}")
                t.start()
                writers.append(t)
            deadline = time.monotonic() + 0.5     # a stalled peer does not hold us up
            for t in writers:
                t.join(max(0.0, deadline - time.monotonic()))
            for c in self._conns.values():
                c.transport.shutdown(socket.SHUT_RDWR)
            for c in self._conns.values():
                with c.cv:
                    c.busy = False
                    c.cv.notify()
            for c in self._conns.values():
                c.receiver.join(1.0)
                c.sender.join(0.1)
                _close_quietly(c.sock)


def _send_quietly_v(transport, frame):
    try:
        transport.sendv([frame])
    except (OSError, ValueError):
        pass


def _describe_socket_error(e, doing):
    if isinstance(e, ConnectionResetError):
        return f"connection reset by peer while {doing}"
    if isinstance(e, BrokenPipeError):
        return f"connection closed by peer (broken pipe while {doing})"
    if isinstance(e, ssl.SSLError):
        return f"TLS error while {doing}: {e}"
    return f"connection error while {doing}: {getattr(e, 'strerror', None) or e}"
