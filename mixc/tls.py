"""Certificates for ``mixc run --tls``: a small CA and one certificate per party.

``keygen(directory, parties)`` writes::

    ca.crt  ca.key                 the CA (the key mode 0600; reused if present)
    <party>.crt  <party>.key       one per party (EC P-256, key mode 0600)

A party certificate names its party in the subject commonName, is signed by
the CA, and may act as TLS server and client (the same certificate serves
both roles, since the party that sorts first dials and the other accepts).

``contexts(directory, party)`` checks party P's files (present, the
certificate names P, signed by the CA, not expired, matches the key) and
returns the ``(server, client)`` pair of ``ssl.SSLContext`` that
``TcpLink.connect(..., ssl_context=..., check_cert_names=True)`` takes: TLS 1.3
only; both require the peer's certificate and verify it against ``ca.crt``; the
links check that its commonName is the expected peer. The links' handshake --
with each party's X25519 public key for the pairwise keys -- runs inside this
channel, so the certificates are what authenticates those keys.

The certificates are made with the ``cryptography`` package.
"""
from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from pathlib import Path

from .errors import MixcError

CA_CERT, CA_KEY = "ca.crt", "ca.key"
_MAX_CN = 64          # X.509 upper bound of a commonName


def file_stem(party):
    from .bundle import _filename
    return _filename(party)


def party_files(directory, party):
    d = Path(directory)
    stem = file_stem(party)
    return d / CA_CERT, d / f"{stem}.crt", d / f"{stem}.key"


def _x509():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as e:  # pragma: no cover - a dependency of mixc
        raise MixcError(f"the cryptography package is needed for TLS certificates ({e}); "
                        "pip install cryptography") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def check_party_names(parties):
    parties = [p.strip() for p in parties]
    if not parties or any(not p for p in parties):
        raise MixcError("keygen needs party names (--parties a,b,...)")
    dup = sorted({p for p in parties if parties.count(p) > 1})
    if dup:
        raise MixcError(f"party {dup[0]!r} is given twice")
    for p in parties:
        if len(p) > _MAX_CN:
            raise MixcError(f"party name {p[:20]!r}... is longer than {_MAX_CN} characters")
        if p in ("ca",) or file_stem(p) == "ca":
            raise MixcError(f"a party cannot be named {p!r} (ca.crt is the CA's file)")
    stems = {}
    for p in parties:
        other = stems.setdefault(file_stem(p), p)
        if other != p:
            raise MixcError(f"parties {other!r} and {p!r} would share the file "
                            f"{file_stem(p)}.crt")
    return parties


def _write_atomic(path, data, mode):
    """Write ``data`` to ``path`` with ``mode``: the mode is set before any byte
    is written, so a key is never readable by others, and the file appears
    whole or not at all."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_pem_pair(serialization, crt_path, cert, key_path, private):
    pem = serialization.Encoding.PEM
    _write_atomic(key_path, private.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()), 0o600)
    _write_atomic(crt_path, cert.public_bytes(pem), 0o644)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def keygen(directory, parties, days=365):
    """Make (or reuse) the CA in ``directory`` and a certificate per party. -> written paths."""
    x509, hashes, serialization, ec, EKU, NameOID = _x509()
    parties = check_party_names(parties)
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise MixcError(f"{directory}: not a directory")
    d.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = d / CA_CERT, d / CA_KEY
    written = []
    now = _now()
    start = now - datetime.timedelta(minutes=5)      # tolerate small clock skew
    if ca_crt.exists() or ca_key.exists():
        if not (ca_crt.is_file() and ca_key.is_file()):
            have = ca_crt if ca_crt.exists() else ca_key
            raise MixcError(f"{have} exists but not its pair ({CA_CERT} and {CA_KEY} go "
                            "together); remove it or use another directory")
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
            ca_private = serialization.load_pem_private_key(ca_key.read_bytes(), None)
        except ValueError as e:
            raise MixcError(f"{d}: cannot reuse the CA: {e}") from None
        if ca_cert.public_key().public_numbers() != ca_private.public_key().public_numbers():
            raise MixcError(f"{ca_key} is not the key of {ca_crt}")
    else:
        ca_private = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                             f"mixc CA {os.urandom(4).hex()}")])
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_private.public_key())
        ca_cert = (x509.CertificateBuilder()
                   .subject_name(name).issuer_name(name)
                   .public_key(ca_private.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start)
                   .not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=False, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(ski, critical=False)
                   .sign(ca_private, hashes.SHA256()))
        _write_pem_pair(serialization, ca_crt, ca_cert, ca_key, ca_private)
        written += [ca_crt, ca_key]
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_private.public_key())
    for party in parties:
        _, crt, key = party_files(d, party)
        private = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
                .issuer_name(ca_cert.subject)
                .public_key(private.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH, EKU.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()),
                               critical=False)
                .add_extension(aki, critical=False)
                .sign(ca_private, hashes.SHA256()))
        _write_pem_pair(serialization, crt, cert, key, private)
        written += [crt, key]
    return written


def _load_cert(x509, path, what):
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MixcError(f"--tls: {what} {path}: {e.strerror or e}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise MixcError(f"--tls: {path} is not a PEM certificate ({e})") from None


def contexts(directory, party):
    """-> (server_context, client_context) for party ``party``; every problem one line."""
    x509, _, _, _, _, NameOID = _x509()
    d = Path(directory)
    if not d.is_dir():
        raise MixcError(f"--tls {directory}: " + ("not a directory" if d.exists() else
                        "no such directory (make one with mixc keygen)"))
    ca, crt, key = party_files(d, party)
    for f in (ca, crt, key):
        if not f.is_file():
            raise MixcError(f"--tls: {f} is missing (mixc keygen {directory} --parties ... "
                            f"makes it)")
    ca_cert = _load_cert(x509, ca, "CA certificate")
    cert = _load_cert(x509, crt, "certificate")
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if party not in names:
        raise MixcError(f"--tls: {crt} is a certificate for {', '.join(map(repr, names)) or 'no one'}"
                        f", not party {party!r}")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception as e:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError
        raise MixcError(f"--tls: {crt} was not issued by {ca} (certificates from different "
                        f"mixc keygen runs?): {type(e).__name__}") from None
    now = _now()
    for c, f in ((ca_cert, ca), (cert, crt)):
        if c.not_valid_after_utc < now:
            raise MixcError(f"--tls: {f} expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
        if c.not_valid_before_utc > now:
            raise MixcError(f"--tls: {f} is not valid before "
                            f"{c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=str(ca))
            ctx.load_cert_chain(str(crt), str(key))
        except ssl.SSLError as e:
            raise MixcError(f"--tls: cannot use {crt} with {key}: {e.reason or e} "
                            "(is the key the certificate's?)") from None
        except OSError as e:
            raise MixcError(f"--tls: {e.filename or key}: {e.strerror or e}") from None
    client.check_hostname = False     # the links check the certificate names the peer party
    return server, client
