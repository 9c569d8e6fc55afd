"""TLS for Flotilla's gRPC ports and channels, from a `TlsConfig` (file paths,
etcd's flags), with certificates re-read when their files change.

A shared leaf (DESIGN.md, "Dependencies"): it imports only grpc, the
standard library and cryptography, so every role asks it for its ports and
channels.

Two configurations per process, as etcd has:

- the client endpoint of a router: etcd's --cert-file, --key-file,
  --trusted-ca-file, --client-cert-auth (RouterConfig.client_tls);
- the peer one: --peer-cert-file, --peer-key-file, --peer-trusted-ca-file,
  --peer-client-cert-auth: every internal port (Raft streams, Store,
  StoreAdmin, Placement) and every channel to a Flotilla process. It is
  process-wide: a process main calls `configure_peer(cfg)` once, before it
  opens anything; `add_peer_port` and `peer_aio_channel`/`peer_channel` use
  it. The default is plaintext (no file given), so nothing changes for a
  process that never configures it.

    creds = Tls(TlsConfig(cert_file="server.crt", key_file="server.key",
                          trusted_ca_file="ca.crt", client_cert_auth=True))
    port = creds.add_port(server, "127.0.0.1:0")     # secure port; plaintext is refused
    ch = creds.aio_channel("127.0.0.1:7001", options)  # presents cert/key, trusts the CA

Rotation without restart: a server port uses gRPC's dynamic SSL credentials,
whose fetcher gRPC calls on each new handshake; it looks at the files'
(mtime, size, inode) and, when one changed, reads the pair again and serves it
from the next handshake on (connections already open carry on). A cert and
key that do not match (caught half way through a replacement) keep the old
pair until they do. Channel credentials are built on each new channel from
the files as they are then (cached while the files are unchanged). The
HTTP gateway's ssl.SSLContext does the same through its SNI callback.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

log = logging.getLogger(__name__)

__all__ = [
    "Tls",
    "TlsConfig",
    "TlsError",
    "add_peer_port",
    "configure_peer",
    "peer",
    "peer_aio_channel",
    "peer_channel",
]


class TlsError(Exception):
    """A TLS configuration that cannot work (a cert without its key, a file
    that cannot be read, a key that is not the certificate's)."""


@dataclass(frozen=True)
class TlsConfig:
    """etcd's four TLS settings. No cert_file/key_file: plaintext."""

    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    """Server side: require a client certificate signed by trusted_ca_file."""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file or self.key_file)

    def check(self, what: str = "") -> None:
        """TlsError unless the settings can work (and the files read and match)."""
        pre = f"{what}: " if what else ""
        if bool(self.cert_file) != bool(self.key_file):
            raise TlsError(f"{pre}give both a certificate and its key file")
        if not self.enabled:
            if self.client_cert_auth or self.trusted_ca_file:
                raise TlsError(f"{pre}a trusted CA or client certificate auth needs a certificate and key file")
            return
        if self.client_cert_auth and not self.trusted_ca_file:
            raise TlsError(f"{pre}client certificate auth needs a trusted CA file")
        cert, key = _read(self.cert_file), _read(self.key_file)
        if self.trusted_ca_file:
            _read(self.trusted_ca_file)
        if not _pair_matches(cert, key):
            raise TlsError(f"{pre}{self.key_file} is not the key of {self.cert_file}")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror}") from None


def _stamp(paths: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """What tells a changed file: (mtime_ns, size, inode) of each (zeros if missing)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


def _pair_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Is key_pem the private key of the (first) certificate in cert_pem?"""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        return False
    fmt = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


@dataclass(frozen=True)
class _Material:
    cert: bytes
    key: bytes
    ca: bytes | None


class Tls:
    """Ports and channels of one TlsConfig; plaintext when it has no files."""

    def __init__(self, cfg: TlsConfig | None = None) -> None:
        self.cfg = cfg or TlsConfig()
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._material: _Material | None = None
        self._channel_creds: grpc.ChannelCredentials | None = None
        self.reloads = 0
        """How many times a changed pair was read again (the first read not counted)."""

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    @property
    def scheme(self) -> str:
        return "https" if self.enabled else "http"

    def _paths(self) -> list[str]:
        return [p for p in (self.cfg.cert_file, self.cfg.key_file, self.cfg.trusted_ca_file) if p]

    def _refresh(self) -> tuple[_Material, bool]:
        """The files' contents, read again if they changed; (material, changed).
        A pair caught half replaced (key not the cert's) keeps the old one."""
        with self._lock:
            stamp = _stamp(self._paths())
            if self._material is not None and stamp == self._stamp:
                return self._material, False
            try:
                cert, key = _read(self.cfg.cert_file), _read(self.cfg.key_file)
                ca = _read(self.cfg.trusted_ca_file) if self.cfg.trusted_ca_file else None
                if not _pair_matches(cert, key):
                    raise TlsError(f"{self.cfg.key_file} is not the key of {self.cfg.cert_file}")
            except TlsError as exc:
                if self._material is None:
                    raise
                log.warning("tls: keeping the certificate in use: %s", exc)
                return self._material, False
            first = self._material is None
            self._material, self._stamp = _Material(cert, key, ca), stamp
            self._channel_creds = None
            if not first:
                self.reloads += 1
                log.info("tls: %s changed: read again", self.cfg.cert_file)
            return self._material, not first

    # -- servers ------------------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials:
        """Dynamic credentials: the pair is re-read from the next handshake on
        once its files change."""
        m, _ = self._refresh()

        def config(mat: _Material) -> Any:
            return grpc.ssl_server_certificate_configuration([(mat.key, mat.cert)], root_certificates=mat.ca)

        def fetch() -> Any:
            try:
                mat, changed = self._refresh()
            except Exception:  # noqa: BLE001 - never fail a handshake over a reload; the old pair stays
                log.exception("tls: reading %s", self.cfg.cert_file)
                return None
            return config(mat) if changed else None

        return grpc.dynamic_ssl_server_credentials(config(m), fetch, require_client_authentication=self.cfg.client_cert_auth)

    def add_port(self, server: grpc.aio.Server | grpc.Server, address: str) -> int:
        """A secure port with these credentials, or an insecure one without TLS."""
        if not self.enabled:
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, self.server_credentials()))

    def server_ssl_context(self) -> ssl.SSLContext:
        """For an HTTPS server (the gateway): the same pair and CA. Its SNI
        callback (each handshake) swaps in a context of the new pair once
        the files changed."""
        self._refresh()
        held = {"stamp": self._stamp, "ctx": self._make_server_context()}

        def on_sni(sslobj: Any, _name: str | None, _ctx: ssl.SSLContext) -> None:
            try:
                self._refresh()
                if held["stamp"] != self._stamp:
                    held["ctx"], held["stamp"] = self._make_server_context(), self._stamp
                sslobj.context = held["ctx"]
            except Exception:  # noqa: BLE001 - keep the context in use
                log.exception("tls: reloading the HTTPS certificate")

        first = held["ctx"]
        assert isinstance(first, ssl.SSLContext)
        first.sni_callback = on_sni
        return first

    def _make_server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        if self.cfg.trusted_ca_file:
            ctx.load_verify_locations(self.cfg.trusted_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.cfg.client_cert_auth else ssl.CERT_NONE
        return ctx

    # -- clients ------------------------------------------------------------------------

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Trust trusted_ca_file (else the system's roots); present cert/key."""
        m, _ = self._refresh()
        with self._lock:
            if self._channel_creds is None:
                self._channel_creds = grpc.ssl_channel_credentials(root_certificates=m.ca, private_key=m.key, certificate_chain=m.cert)
            return self._channel_creds

    def aio_channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        if not self.enabled:
            return grpc.aio.insecure_channel(address, options=list(options))
        return grpc.aio.secure_channel(address, self.channel_credentials(), options=list(options))

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        if not self.enabled:
            return grpc.insecure_channel(address, options=list(options))
        return grpc.secure_channel(address, self.channel_credentials(), options=list(options))


# -- the process's peer TLS -----------------------------------------------------------------

_peer = Tls()


def configure_peer(cfg: TlsConfig) -> Tls:
    """Set this process's peer TLS (checked first: TlsError if it cannot work)."""
    global _peer
    cfg.check("peer TLS")
    _peer = Tls(cfg)
    return _peer


def peer() -> Tls:
    """This process's peer TLS (plaintext unless configure_peer was called)."""
    return _peer


def add_peer_port(server: grpc.aio.Server | grpc.Server, address: str) -> int:
    """The process's internal port: secure with the peer certificates when configured."""
    return _peer.add_port(server, address)


def peer_aio_channel(address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to a Flotilla process (its internal port)."""
    return _peer.aio_channel(address, options)


def peer_channel(address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A blocking channel to a Flotilla process (harnesses, tools)."""
    return _peer.channel(address, options)
