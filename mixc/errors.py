"""The error types mixc raises at its users.

Every error a user can cause is a ``MixcError``: its message is one line that
says what went wrong and where (``file:line`` of the author's code for tracing
errors, ``line:col`` for parse errors, the peer and op for runtime faults).
The CLI prints ``str(err)`` and exits non-zero without a traceback.
"""


class MixcError(Exception):
    """Base class of every error mixc reports to a user."""


class ConfigError(MixcError):
    """A device config that does not parse or does not make sense."""


class ParseError(MixcError):
    """IR text that does not parse: carries ``line`` and ``column``."""

    def __init__(self, message, line=None, column=None, filename=None):
        self.message, self.line, self.column, self.filename = message, line, column, filename
        where = [str(x) for x in (filename, line, column) if x is not None]
        super().__init__(": ".join([":".join(where), message]) if where else message)


class TraceError(MixcError):
    """A program that cannot be traced or placed; names the author's line."""


class VerifyError(MixcError):
    """An IR module that breaks an invariant (types, placement, leakage)."""


class InputError(MixcError):
    """A missing, unreadable, or wrongly shaped/typed input."""


class NumericError(MixcError):
    """A value an op cannot compute on at run time (NaN/inf, or outside the fixed-point
    range); names the op, the party and the author's ``file:line``."""


class RangeWarning(UserWarning):
    """A value outside the range where the op that made it is exact or its approximation
    holds (``simulate``'s range sanitizer), or a constant that fixed point cannot keep (at
    build time); names the author's ``file:line``."""


class PeerError(MixcError):
    """A peer that disappeared, stalled, or sent something malformed."""

    def __init__(self, peer, message, op=None):
        self.peer, self.op = peer, op
        where = f" during {op}" if op else ""
        super().__init__(f"peer {peer!r}{where}: {message}")
