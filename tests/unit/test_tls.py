"""rpc/tls.py (TLS ports and channels from a TlsConfig, certificates re-read
on change) and flotilla/certs.py (the playground's throw-away CA and
certificates): on a real gRPC server on 127.0.0.1, in process."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509

from flotilla import certs
from rpc import tls
from rpc.tls import Tls, TlsConfig, TlsError

ECHO = "/test.Echo/Say"


@pytest.fixture()
def pki(tmp_path: Path) -> dict[str, Path]:
    return certs.write_playground_pki(tmp_path / "tls")


def server_cfg(p: dict[str, Path], *, auth: bool = True) -> TlsConfig:
    return TlsConfig(str(p["server.crt"]), str(p["server.key"]), str(p["ca.crt"]), client_cert_auth=auth)


def client_cfg(p: dict[str, Path]) -> TlsConfig:
    return TlsConfig(str(p["client.crt"]), str(p["client.key"]), str(p["ca.crt"]))


# -- certificates -------------------------------------------------------------------------


def test_playground_pki_files_and_sans(pki: dict[str, Path]) -> None:
    assert sorted(p.name for p in pki.values()) == ["ca.crt", "ca.key", "client.crt", "client.key", "server.crt", "server.key"]
    assert pki["server.key"].stat().st_mode & 0o077 == 0
    ca = x509.load_pem_x509_certificate(pki["ca.crt"].read_bytes())
    server = x509.load_pem_x509_certificate(pki["server.crt"].read_bytes())
    client = x509.load_pem_x509_certificate(pki["client.crt"].read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    for cert in (server, client):
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)


def test_playground_pki_is_kept_on_a_second_call(pki: dict[str, Path]) -> None:
    before = {n: p.read_bytes() for n, p in pki.items()}
    again = certs.write_playground_pki(pki["ca.crt"].parent)
    assert {n: p.read_bytes() for n, p in again.items()} == before


def test_issue_from_a_loaded_ca(pki: dict[str, Path]) -> None:
    ca = certs.load_ca(pki["ca.crt"], pki["ca.key"])
    cert_pem, key_pem = certs.issue(ca, "other", ["10.0.0.1", "node.example"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca.cert)
    assert certs.serial_of(cert_pem) != certs.serial_of(pki["server.crt"].read_bytes())
    assert tls._pair_matches(cert_pem, key_pem)
    assert not tls._pair_matches(cert_pem, pki["server.key"].read_bytes())


# -- configuration checks -----------------------------------------------------------------


def test_check(pki: dict[str, Path]) -> None:
    TlsConfig().check()
    server_cfg(pki).check()
    with pytest.raises(TlsError, match="both a certificate and its key"):
        TlsConfig(cert_file=str(pki["server.crt"])).check()
    with pytest.raises(TlsError, match="needs a trusted CA"):
        TlsConfig(str(pki["server.crt"]), str(pki["server.key"]), client_cert_auth=True).check()
    with pytest.raises(TlsError, match="is not the key of"):
        TlsConfig(str(pki["server.crt"]), str(pki["client.key"])).check()
    with pytest.raises(TlsError, match="cannot read"):
        TlsConfig(str(pki["server.crt"]) + ".missing", str(pki["server.key"])).check()
    with pytest.raises(TlsError, match="needs a certificate"):
        TlsConfig(client_cert_auth=True).check()


def test_peer_defaults_to_plaintext_and_configure_checks(pki: dict[str, Path]) -> None:
    assert not tls.peer().enabled
    with pytest.raises(TlsError):
        tls.configure_peer(TlsConfig(cert_file=str(pki["server.crt"])))
    assert not tls.peer().enabled  # a bad configuration leaves the old one


# -- ports and channels -------------------------------------------------------------------


def _echo_server(creds: Tls) -> tuple[grpc.aio.Server, int]:
    async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say, lambda b: b, lambda b: b)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = creds.add_port(server, "127.0.0.1:0")
    assert port
    return server, port


async def _say(channel: grpc.aio.Channel, timeout: float = 3.0) -> bytes:
    async with channel:
        out: bytes = await channel.unary_unary(ECHO)(b"hi", timeout=timeout)
        return out


def _serial_served(port: int, p: dict[str, Path]) -> int:
    """The serial of the certificate a new TLS connection is shown."""
    ctx = ssl.create_default_context(cafile=str(p["ca.crt"]))
    ctx.load_cert_chain(str(p["client.crt"]), str(p["client.key"]))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, ctx.wrap_socket(s, server_hostname="127.0.0.1") as ss:
        der = ss.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_plaintext_by_default() -> None:
    async def main() -> None:
        server, port = _echo_server(Tls())
        await server.start()
        try:
            assert await _say(Tls().aio_channel(f"127.0.0.1:{port}")) == b"hi"
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_mutual_tls_refuses_plaintext_no_certificate_and_a_wrong_ca(pki: dict[str, Path], tmp_path: Path) -> None:
    other = certs.write_playground_pki(tmp_path / "other")

    async def main() -> None:
        server, port = _echo_server(Tls(server_cfg(pki)))
        await server.start()
        addr = f"127.0.0.1:{port}"
        try:
            assert await _say(Tls(client_cfg(pki)).aio_channel(addr)) == b"hi"
            refused = [
                grpc.aio.insecure_channel(addr),  # plaintext
                grpc.aio.secure_channel(addr, grpc.ssl_channel_credentials(pki["ca.crt"].read_bytes())),  # no client cert
                Tls(client_cfg(other)).aio_channel(addr),  # another CA, both ways
            ]
            for ch in refused:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await _say(ch, timeout=2)
                assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_without_client_cert_auth_a_client_needs_only_the_ca(pki: dict[str, Path]) -> None:
    async def main() -> None:
        server, port = _echo_server(Tls(server_cfg(pki, auth=False)))
        await server.start()
        try:
            ch = grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(pki["ca.crt"].read_bytes()))
            assert await _say(ch) == b"hi"
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_server_certificate_rotates_without_restart(pki: dict[str, Path]) -> None:
    creds = Tls(server_cfg(pki))
    ca = certs.load_ca(pki["ca.crt"], pki["ca.key"])

    async def main() -> None:
        server, port = _echo_server(creds)
        await server.start()
        addr = f"127.0.0.1:{port}"
        try:
            old = await asyncio.to_thread(_serial_served, port, pki)
            assert old == certs.serial_of(pki["server.crt"].read_bytes())
            kept = Tls(client_cfg(pki)).aio_channel(addr)
            assert await kept.unary_unary(ECHO)(b"a", timeout=3) == b"a"
            # Half way through a replacement (new key, old cert): the old pair stays in use.
            new_cert, new_key = certs.issue(ca, "rotated", ["127.0.0.1", "localhost"])
            certs.write_file(pki["server.key"], new_key, private=True)
            assert await asyncio.to_thread(_serial_served, port, pki) == old
            certs.write_file(pki["server.crt"], new_cert)
            new = await asyncio.to_thread(_serial_served, port, pki)
            assert new == certs.serial_of(new_cert) != old
            assert creds.reloads == 1
            assert await kept.unary_unary(ECHO)(b"b", timeout=3) == b"b"  # the open connection carries on
            assert await _say(Tls(client_cfg(pki)).aio_channel(addr)) == b"hi"
            await kept.close()
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_channel_credentials_are_read_again_when_the_files_change(pki: dict[str, Path]) -> None:
    client = Tls(client_cfg(pki))
    first = client.channel_credentials()
    assert client.channel_credentials() is first  # cached while unchanged
    ca = certs.load_ca(pki["ca.crt"], pki["ca.key"])
    certs.write_pair(pki["client.crt"].parent, "client", certs.issue(ca, "client2", (), server=False))
    assert client.channel_credentials() is not first
    assert client.reloads == 1


def test_blocking_channel_and_https_context(pki: dict[str, Path]) -> None:
    ctx = Tls(server_cfg(pki)).server_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert Tls(server_cfg(pki, auth=False)).server_ssl_context().verify_mode == ssl.CERT_NONE
    assert Tls(server_cfg(pki)).scheme == "https" and Tls().scheme == "http"

    async def main() -> None:
        server, port = _echo_server(Tls(server_cfg(pki)))
        await server.start()
        try:
            def call() -> bytes:
                with Tls(client_cfg(pki)).channel(f"127.0.0.1:{port}") as ch:
                    out: bytes = ch.unary_unary(ECHO)(b"sync", timeout=3)
                    return out

            assert await asyncio.to_thread(call) == b"sync"
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_https_context_serves_a_rotated_certificate_to_new_connections(pki: dict[str, Path]) -> None:
    """The gateway's ssl.SSLContext: its SNI callback (called on every
    handshake, SNI sent or not) swaps in the new pair once the files change."""
    import threading

    ctx = Tls(server_cfg(pki, auth=False)).server_ssl_context()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()

    def serial() -> int:
        client = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s, client.wrap_socket(s, server_hostname="127.0.0.1") as ss:
            der = ss.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    try:
        assert serial() == certs.serial_of(pki["server.crt"].read_bytes())
        pair = certs.issue(certs.load_ca(pki["ca.crt"], pki["ca.key"]), "rotated", ["127.0.0.1"])
        certs.write_pair(pki["server.crt"].parent, "server", pair)
        assert serial() == certs.serial_of(pair[0])
    finally:
        listener.close()
