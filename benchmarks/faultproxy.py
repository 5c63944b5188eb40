"""A TCP proxy that injects faults between two ``mixc run --party`` processes.

Run it as its own process (the tests and ``benchmarks/reliability.py`` do)::

    python benchmarks/faultproxy.py --target 127.0.0.1:PORT --fault garble --at 3
    python benchmarks/faultproxy.py --replay FILE --target 127.0.0.1:PORT

It listens on loopback only (``--listen``, default ``127.0.0.1:0``), prints
``ready PORT`` once listening, and forwards every accepted connection to
``--target``. Give the dialing party (the one whose name sorts first) the
proxy's port as the accepting party's address. In the dialing direction
(client -> server) it parses the link protocol of ``runtime/links.py`` --
the handshake (hello + verdict), then frames -- and, at frame ``--at``
(1 = the first frame after the handshake), injects one fault, once:

``reset``     both connections are reset (RST, via SO_LINGER 0);
``garble``    the frame's header is corrupted (byte ``--offset``, default 0:
              the magic, XOR 0xFF) and forwarded;
``truncate``  the header and half the payload are forwarded, then the
              stream to the server ends (FIN); the way back stays open;
``duplicate`` the frame is forwarded twice (a replayed message);
``stall``     nothing more is forwarded in either direction; connections
              stay open (a frozen network path);
``none``      pass everything through (with ``--record FILE``: save the
              client's bytes of the first connection, to replay later).

``--capture DIR`` saves every byte forwarded, each connection's two
directions to files ``N-c2s.bin`` and ``N-s2c.bin`` (what a passive
eavesdropper on the path would see).

With ``--tls`` it parses TLS records instead of frames: the fault hits the
first application-data record that starts after ``--after-bytes`` bytes
(default 8192, well past the TLS and link handshakes); ``garble`` flips a
byte inside the encrypted record.

``--replay FILE`` connects to ``--target`` (retrying until it is up), sends
the recorded bytes -- a handshake and frames from an earlier session -- and
prints what came back.

Each event is printed as one line (``fault garble at frame 3 tag 2``). The
process exits after ``--max-seconds`` (default 60) whatever happens.
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path

HELLO = struct.Struct("<4sHHHH")
HELLO_KEYS = 64                  # the party's session contribution and X25519 public key
VERDICT = struct.Struct("<4sBH")
HEADER = struct.Struct("<4sBBBBQQ8s")
TLS_HEADER = struct.Struct(">BHH")
FAULTS = ("none", "reset", "garble", "truncate", "duplicate", "stall")

_lock = threading.Lock()
_fired = threading.Event()       # the one fault has been injected
_stalled = threading.Event()     # stop forwarding everything
_conns = []                      # every socket, for reset/stall/exit


def say(line):
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Closed(Exception):
    pass


class Stream:
    """Exact reads from a socket."""

    def __init__(self, sock):
        self.sock = sock

    def read(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 16))
            if not chunk:
                raise Closed(len(buf))
            buf += chunk
        return bytes(buf)


def _send(dst, data, record=None):
    if _stalled.is_set():
        _hold()
    if record is not None:
        record.write(data)
    dst.sendall(data)


def _hold():
    """Stall: keep everything open and forward nothing until the process exits."""
    while True:
        time.sleep(3600)


_resetting = threading.Event()


def _reset(*socks):
    """RST both ways: linger 0, wake the other pump's blocked recv (SHUT_RD sends
    nothing), close; the kernel resets each once the last reference is gone."""
    _resetting.set()
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RD)
        except OSError:
            pass
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def _close(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass


def _copy(src, dst, n, record=None):
    stream = Stream(src)
    while n:
        chunk = stream.read(min(n, 1 << 16))
        _send(dst, chunk, record)
        n -= len(chunk)


def _inject(opts, src, dst, frame, payload_len, what, record):
    """Do the fault to ``frame`` (header bytes); -> True if the pump should stop."""
    _fired.set()
    say(f"fault {opts.fault} at {what}")
    if opts.fault == "reset":
        _reset(src, dst)
        return True
    if opts.fault == "stall":
        _stalled.set()
        _hold()
    if opts.fault == "garble":
        b = bytearray(frame)
        b[opts.offset % len(b)] ^= 0xFF
        _send(dst, bytes(b), record)
        return False
    if opts.fault == "truncate":
        # the stream to the server ends mid-frame (FIN); the way back stays open
        _send(dst, frame, record)
        _copy(src, dst, payload_len // 2, record)
        dst.shutdown(socket.SHUT_WR)
        return True
    return False


def pump_frames(opts, src, dst, record):
    """client -> server: handshake, then frames, with the fault at frame ``--at``."""
    s = Stream(src)
    head = s.read(HELLO.size)
    _, _, ln, ls, lh = HELLO.unpack(head)
    _send(dst, head + s.read(ln + ls + lh + HELLO_KEYS), record)
    head = s.read(VERDICT.size)
    _send(dst, head + s.read(VERDICT.unpack(head)[2]), record)
    index = 0
    while True:
        header = s.read(HEADER.size)
        _, kind, _, ndim, _, tag, length, _ = HEADER.unpack(header)
        dims = s.read(8 * ndim) if kind == 1 else b""
        frame = header + dims
        index += 1
        if index == opts.at and not _fired.is_set() and opts.fault != "none":
            what = f"frame {index} tag {tag} kind {kind} length {length}"
            if opts.fault == "duplicate":
                _fired.set()
                say(f"fault duplicate at {what}")
                payload = s.read(length)
                _send(dst, frame + payload + frame + payload, record)
                continue
            if _inject(opts, src, dst, frame, length, what, record):
                return
            _copy(src, dst, length, record)
            continue
        _send(dst, frame, record)
        _copy(src, dst, length, record)


def pump_tls(opts, src, dst, record):
    """client -> server over TLS: records; the fault at the first app record past --after-bytes."""
    s = Stream(src)
    seen = 0
    while True:
        header = s.read(TLS_HEADER.size)
        ctype, _, length = TLS_HEADER.unpack(header)
        if (ctype == 23 and seen >= opts.after_bytes and not _fired.is_set()
                and opts.fault != "none"):
            what = f"TLS record at byte {seen} (application data, {length} bytes)"
            if opts.fault == "garble":
                _fired.set()
                say(f"fault garble at {what}")
                body = bytearray(s.read(length))
                body[len(body) // 2] ^= 0xFF
                _send(dst, header + bytes(body), record)
                seen += len(header) + length
                continue
            if opts.fault == "duplicate":
                _fired.set()
                say(f"fault duplicate at {what}")
                body = s.read(length)
                _send(dst, header + body + header + body, record)
                seen += 2 * (len(header) + length)
                continue
            if _inject(opts, src, dst, header, length, what, record):
                return
        _send(dst, header, record)
        _copy(src, dst, length, record)
        seen += len(header) + length


def pump_plain(src, dst, record=None):
    while True:
        try:
            data = src.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            if not _resetting.is_set():
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            return
        _send(dst, data, record)


_recorded = threading.Event()
_connections = iter(range(1, 1 << 30))


class _Sinks:
    """Where a direction's bytes are written: the --record file and/or a --capture file."""

    def __init__(self, files):
        self.files = [f for f in files if f is not None]

    def write(self, data):
        for f in self.files:
            f.write(data)

    def close(self):
        for f in self.files:
            f.close()


def _capture_files(opts):
    """-> (client->server, server->client) files of a new connection under --capture DIR
    (unbuffered: a test reads them while the proxy still runs), or (None, None)."""
    if not opts.capture:
        return None, None
    with _lock:
        n = next(_connections)
    d = Path(opts.capture)
    return (open(d / f"{n}-c2s.bin", "wb", buffering=0),  # noqa: SIM115 - closed by _Sinks
            open(d / f"{n}-s2c.bin", "wb", buffering=0))  # noqa: SIM115


def handle(opts, client):
    try:
        server = socket.create_connection(opts.target, timeout=2)
    except OSError:
        _reset(client)           # the target is not up yet: the party retries
        return
    server.settimeout(None)
    client.settimeout(None)
    _conns.extend([client, server])
    first = None
    if opts.record:
        with _lock:
            if not _recorded.is_set():
                _recorded.set()
                first = open(opts.record, "wb")  # noqa: SIM115 - closed below
    to_server, to_client = _capture_files(opts)
    record = _Sinks([first, to_server])
    back = threading.Thread(target=pump_plain, args=(server, client, _Sinks([to_client])),
                            daemon=True)
    back.start()
    try:
        (pump_tls if opts.tls else pump_frames)(opts, client, server, record)
    except (Closed, OSError):
        # one side went away: pass the close on (FIN) so the other side sees it too
        try:
            server.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    finally:
        record.close()


def serve(opts):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(opts.listen)
    listener.listen(16)
    say(f"ready {listener.getsockname()[1]}")
    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(opts, client), daemon=True).start()


def replay(opts):
    with open(opts.replay, "rb") as f:
        data = f.read()
    deadline = time.monotonic() + opts.max_seconds
    while True:
        try:
            sock = socket.create_connection(opts.target, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                say("replay: target never came up")
                return 1
            time.sleep(0.02)
    sock.settimeout(5)
    # the hello first, as a party would; then whatever else was recorded
    _, _, ln, ls, lh = HELLO.unpack_from(data)
    cut = HELLO.size + ln + ls + lh + HELLO_KEYS
    try:
        sock.sendall(data[:cut])
        say(f"replayed a hello of {cut} bytes")
        stream = Stream(sock)
        head = stream.read(HELLO.size)
        _, _, ln, ls, lh = HELLO.unpack(head)
        stream.read(ln + ls + lh + HELLO_KEYS)
        head = stream.read(VERDICT.size)
        _, status, lv = VERDICT.unpack(head)
        text = stream.read(lv).decode(errors="replace")
        say(f"verdict {'ok' if status == 0 else 'refused'} {text}")
        sock.sendall(data[cut:])
        say(f"replayed {len(data) - cut} more bytes")
    except (OSError, Closed) as e:
        say(f"replay: connection ended: {type(e).__name__} {e}")
    sock.close()
    return 0


# --------------------------------------------------------------------------
# helpers for the tests and benchmarks/reliability.py (importable; stdlib only)

def _ephemeral_low():
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n, host="127.0.0.1"):
    """``n`` distinct ports free on ``host``, below the ephemeral range.

    A party started by hand binds its port only after it has imported
    mixc; meanwhile any outgoing connection on the machine takes a local
    port from the ephemeral range, so a port from that range could be gone
    by then.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    ports = []
    while len(ports) < n:
        port = rng.randrange(max(1024, low - 16384), low)
        if port in ports:
            continue
        with socket.socket() as sk:
            try:
                sk.bind((host, port))
            except OSError:
                continue
        ports.append(port)
    return ports


class Proc:
    """A child process whose output lines are collected (with times) by threads."""

    def __init__(self, name, cmd, env=None):
        import subprocess
        self.name = name
        self.lines = []          # (monotonic time, stream, line)
        self.ended = None        # monotonic time the exit was first seen
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, errors="replace",
                                     env=env)
        self._readers = [threading.Thread(target=self._read, args=(st, tag), daemon=True)
                         for st, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for t in self._readers:
            t.start()

    def _read(self, stream, tag):
        for line in stream:
            self.lines.append((time.monotonic(), tag, line.rstrip("\n")))

    def wait_line(self, prefix, timeout):
        """-> (time, line) of the first stdout/stderr line starting with prefix."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, _, line in list(self.lines):
                if line.startswith(prefix):
                    return t, line
            if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                break
            time.sleep(0.01)
        raise TimeoutError(f"{self.name}: no line starting {prefix!r}; got "
                           f"{self.text('out') + self.text()!r}")

    def wait(self, timeout):
        """Wait for the exit (at most ``timeout`` s); -> returncode or None if still running."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.proc.poll() is not None and self.ended is None:
            self.ended = time.monotonic()
        for r in self._readers:
            r.join(1.0)
        return self.proc.returncode

    def text(self, stream="err"):
        return "\n".join(line for _, tag, line in self.lines if tag == stream)

    def errors(self):
        """The ``mixc: error: ...`` lines (progress redraws removed)."""
        text = self.text().replace("\x1b[K", "").replace("\r", "\n")
        return [ln for ln in text.splitlines() if ln.startswith("mixc: error: ")]

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        self.proc.wait()
        for r in self._readers:
            r.join(1.0)


def mixc_party(bundle, party, peers, *, inputs=(), output=None, timeout=5, session=None,
               tls=None, extra=(), env=None):
    """Start ``mixc run BUNDLE --party PARTY`` (``peers``: {party: (host, port)})."""
    cmd = [sys.executable, "-m", "mixc", "run", str(bundle), "--party", party,
           "--peers", ",".join(f"{p}={h}:{port}" for p, (h, port) in peers.items()),
           "--timeout", str(timeout)]
    for item in inputs:
        cmd += ["--input", str(item)]
    if output is not None:
        cmd += ["--output", str(output)]
    if session is not None:
        cmd += ["--session", session]
    if tls is not None:
        cmd += ["--tls", str(tls)]
    return Proc(party, cmd + [str(x) for x in extra], env=env)


def start_proxy(target, fault="none", at=2, *, tls=False, record=None, capture=None,
                max_seconds=30, extra=()):
    """Start this file as a proxy to ``target`` (host, port); -> (Proc, listening port)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--target", f"{target[0]}:{target[1]}",
           "--fault", fault, "--at", str(at), "--max-seconds", str(max_seconds)]
    if tls:
        cmd.append("--tls")
    if record:
        cmd += ["--record", str(record)]
    if capture:
        cmd += ["--capture", str(capture)]
    proxy = Proc("proxy", cmd + [str(x) for x in extra])
    _, line = proxy.wait_line("ready ", 10)
    return proxy, int(line.split()[1])


def start_replay(target, recording, max_seconds=20):
    return Proc("replay", [sys.executable, os.path.abspath(__file__), "--replay", str(recording),
                           "--target", f"{target[0]}:{target[1]}",
                           "--max-seconds", str(max_seconds)])


def _address(text):
    host, _, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost") and not host.startswith("127."):
        raise argparse.ArgumentTypeError("loopback addresses only")
    return host, int(port)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=_address, default=("127.0.0.1", 0))
    ap.add_argument("--target", type=_address, required=True)
    ap.add_argument("--fault", choices=FAULTS, default="none")
    ap.add_argument("--at", type=int, default=2, help="frame number of the fault (1 = first)")
    ap.add_argument("--offset", type=int, default=0, help="garble: byte of the frame header")
    ap.add_argument("--tls", action="store_true", help="the connections are TLS")
    ap.add_argument("--after-bytes", type=int, default=8192)
    ap.add_argument("--record", metavar="FILE")
    ap.add_argument("--capture", metavar="DIR",
                    help="save every connection's bytes, each direction to its own file")
    ap.add_argument("--replay", metavar="FILE")
    ap.add_argument("--max-seconds", type=float, default=60.0)
    opts = ap.parse_args(argv)
    timer = threading.Timer(opts.max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    if opts.replay:
        return replay(opts)
    serve(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
