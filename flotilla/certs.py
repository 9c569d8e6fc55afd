"""Throw-away certificates for `flotilla playground --tls` and tests, made
with the `cryptography` library: a CA, a server certificate (also used by
the processes as their peer certificate: it is good for both server and
client auth) and a client certificate, all ECDSA P-256.

    paths = write_playground_pki(data_dir / "tls")   # ca.crt, ca.key, server.crt/.key, client.crt/.key
    ca = load_ca(paths["ca.crt"], paths["ca.key"])
    issue(ca, "server", ["127.0.0.1", "localhost"], server=True, client=True)  # -> (cert PEM, key PEM)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
VALID_DAYS = 365


@dataclass(frozen=True)
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flotilla"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _window() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=VALID_DAYS)


def make_ca(name: str = "flotilla playground CA") -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Ca(cert, key)


def load_ca(cert_file: str | Path, key_file: str | Path) -> Ca:
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Ca(cert, key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue(ca: Ca, cn: str, hosts: tuple[str, ...] | list[str] = (), *, server: bool = True, client: bool = True) -> tuple[bytes, bytes]:
    """A new key and a certificate for it signed by ca: (cert PEM, key PEM).
    hosts become SANs (IP addresses as IP SANs, names as DNS SANs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window()
    usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on]
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, content_commitment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    )
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (a reader sees the old file or the new one), 0600 if private."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def write_pair(directory: Path, stem: str, pair: tuple[bytes, bytes]) -> None:
    """stem.key, then stem.crt (each replaced atomically)."""
    write_file(directory / f"{stem}.key", pair[1], private=True)
    write_file(directory / f"{stem}.crt", pair[0])


def write_playground_pki(directory: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> dict[str, Path]:
    """ca.crt, ca.key, server.crt/.key (SANs: hosts; server and client
    auth: the processes' peer certificate too), client.crt/.key, made once:
    files already there are kept (a restarted playground keeps its CA)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")
    paths = {n: directory / n for n in names}
    if all(p.exists() for p in paths.values()):
        return paths
    ca = make_ca()
    write_file(paths["ca.key"], ca.key_pem, private=True)
    write_file(paths["ca.crt"], ca.cert_pem)
    write_pair(directory, "server", issue(ca, "flotilla server", hosts, server=True, client=True))
    write_pair(directory, "client", issue(ca, "flotilla client", (), server=False, client=True))
    return paths


def serial_of(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(cert_pem).serial_number
