"""``wss://``: a sentinel serving TLS from a certificate made in the test."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fame._fabric._client import connect
from fame._fabric._transport import SentinelUnreachable, client_ssl_context

from .conftest import Fabric, free_port
from .fabric_agents import Echo


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost; returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fame test sentinel")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "sentinel.crt"
    key_path = directory / "sentinel.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_call_over_wss(fabric: Fabric) -> None:
    cert, key = make_certificate(fabric.tmp)
    port = free_port()
    fabric.sentinel(port, "--cert", str(cert), "--key", str(key))
    url = f"wss://127.0.0.1:{port}/"
    fabric.node(url, "--cafile", str(cert))
    async with connect(url, token=fabric.token, ssl_context=client_ssl_context(cert)) as client:
        echo = client.proxy("echo@fame.fabric", Echo)
        assert await echo.say(text="secret") == "secret"
        assert [i["i"] async for i in echo.count(up_to=20)] == list(range(20))
    # Without trusting the certificate, the client refuses to talk.
    with pytest.raises(SentinelUnreachable, match="TLS"):
        async with connect(url, token=fabric.token):
            pass
    # Plain ws:// to a TLS port does not get through either (it would hang until
    # the connect timeout, kept short here).
    with pytest.raises(SentinelUnreachable):
        async with connect(f"ws://127.0.0.1:{port}/", token=fabric.token, connect_timeout=1):
            pass
