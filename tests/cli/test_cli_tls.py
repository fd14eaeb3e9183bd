"""TLS from the CLI: ``fame sentinel``, ``fame node`` and ``fame-client`` over ``wss://``.

Certificates are made in the test (cryptography): a CA, the sentinel's
certificate for 127.0.0.1 and a client certificate, both issued by it.
The sentinel gets ``FAME_SENTINEL_TLS_CERT``/``_KEY`` and, for mutual TLS,
``FAME_SENTINEL_TLS_CLIENT_CA``; the node and the client ``FAME_TLS_CA``
(which also makes the URL they build ``wss://``) and ``FAME_TLS_CERT``/``_KEY``.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .test_programs_log import free_port
from .test_secret_hygiene import ECHO_AGENT, Service, _env

CALL = ["call", "echo@fame.fabric", "say", "text=over-tls"]
CA_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True,
    crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _write(directory: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("fame test CA"))
        .issuer_name(_name("fame test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": _write(directory, "ca", ca, ca_key)[0]}

    def issue(name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        paths[f"{name}.crt"], paths[f"{name}.key"] = _write(directory, name, cert, key)

    issue(
        "sentinel",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    issue("client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return paths


def _client(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fame._cli.client", "--timeout", "20", *args],
        cwd=root, env=_env(**env), capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


@pytest.fixture
def mutual_tls(tmp_path: Path, suite_secrets: Any) -> Iterator[dict[str, Any]]:
    """A ``fame sentinel`` asking for client certificates, and a ``fame node`` presenting one."""
    pki = make_pki(tmp_path)
    token = secrets.token_urlsafe(32)
    suite_secrets.add("token", token)
    port = free_port()
    common = {
        "FAME_SENTINEL_PORT": str(port),
        "FAME_ADMISSION_TOKEN": token,
        "FAME_STORAGE_PROFILE": "memory",
    }
    client = {
        "FAME_TLS_CA": str(pki["ca"]),
        "FAME_TLS_CERT": str(pki["client.crt"]),
        "FAME_TLS_KEY": str(pki["client.key"]),
    }
    sentinel = Service(
        tmp_path,
        "sentinel",
        ["sentinel"],
        _env(
            **common,
            FAME_SENTINEL_TLS_CERT=str(pki["sentinel.crt"]),
            FAME_SENTINEL_TLS_KEY=str(pki["sentinel.key"]),
            FAME_SENTINEL_TLS_CLIENT_CA=str(pki["ca"]),
        ),
    )
    started = [sentinel]
    try:
        sentinel.wait_ready()
        node = Service(tmp_path, "node", ["node", "--agent", ECHO_AGENT], _env(**common, **client))
        started.append(node)
        node.wait_ready()
        yield {"root": tmp_path, "port": port, "token": token, "pki": pki, "client": client,
               "sentinel": sentinel, "node": node}  # fmt: skip
    finally:
        for service in reversed(started):
            assert service.stop() == 0, service.log.read_text()


def test_sentinel_node_and_client_talk_over_wss_with_mutual_tls(
    mutual_tls: dict[str, Any],
) -> None:
    root, port, token = mutual_tls["root"], mutual_tls["port"], mutual_tls["token"]
    assert f"listening on wss://127.0.0.1:{port}" in mutual_tls["sentinel"].log.read_text()
    assert f"via wss://127.0.0.1:{port}" in mutual_tls["node"].log.read_text()
    # The client builds wss://127.0.0.1:<port> from the port and FAME_TLS_CA.
    done = _client(root, *CALL, FAME_SENTINEL_PORT=str(port), FAME_ADMISSION_TOKEN=token,
                   **mutual_tls["client"])  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, '"over-tls"'), done.stderr


def test_mutual_tls_refuses_a_client_without_a_certificate(mutual_tls: dict[str, Any]) -> None:
    root, port, token = mutual_tls["root"], mutual_tls["port"], mutual_tls["token"]
    url = f"wss://127.0.0.1:{port}"
    # The right CA and the right token, but no client certificate: refused, one line.
    done = _client(root, "--url", url, *CALL, FAME_ADMISSION_TOKEN=token,
                   FAME_TLS_CA=str(mutual_tls["pki"]["ca"]))  # fmt: skip
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("fame-client: ") and url in lines[0], lines
    assert "client certificate" in lines[0] and "FAME_TLS_CERT" in lines[0], lines
    assert "over-tls" not in done.stdout
    # Nor does a client that does not trust the sentinel's CA (it trusts another).
    wrong_ca = {**mutual_tls["client"], "FAME_TLS_CA": str(mutual_tls["pki"]["client.crt"])}
    untrusted = _client(root, "--url", url, *CALL, FAME_ADMISSION_TOKEN=token, **wrong_ca)
    assert untrusted.returncode == 1 and "TLS with the sentinel" in untrusted.stderr, untrusted
    # Meanwhile a client with its certificate still gets its answer.
    ok = _client(root, "--url", url, *CALL, FAME_ADMISSION_TOKEN=token, **mutual_tls["client"])
    assert (ok.returncode, ok.stdout.strip()) == (0, '"over-tls"'), ok.stderr


def test_tls_settings_are_checked_before_anything_starts(tmp_path: Path) -> None:
    def fame(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fame._cli.fame", *args], cwd=tmp_path,
            env=_env(FAME_OPEN_ADMISSION="1", FAME_SENTINEL_PORT="0", **env),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    pki = make_pki(tmp_path)
    cases = [
        (["sentinel"], {"FAME_SENTINEL_TLS_CERT": str(pki["sentinel.crt"])},
         "fame sentinel: FAME_SENTINEL_TLS_KEY is not set"),
        (["sentinel"], {"FAME_SENTINEL_TLS_CLIENT_CA": str(pki["ca"])},
         "fame sentinel: FAME_SENTINEL_TLS_CLIENT_CA: mutual TLS needs"),
        (["sentinel"], {"FAME_SENTINEL_TLS_CERT": str(tmp_path / "missing.crt"),
                        "FAME_SENTINEL_TLS_KEY": str(pki["sentinel.key"])},
         "fame sentinel: FAME_SENTINEL_TLS_CERT: "),
        (["node"], {"FAME_TLS_KEY": str(pki["client.key"])},
         "fame node: FAME_TLS_CERT is not set"),
        (["node"], {"FAME_TLS_CA": str(pki["client.key"])},
         "fame node: FAME_TLS_CA: cannot load the TLS files"),
    ]  # fmt: skip
    for args, env, expected in cases:
        done = fame(*args, **env)
        lines = done.stderr.splitlines()
        assert done.returncode == 1 and len(lines) == 1, (env, done.stderr)
        assert lines[0].startswith(expected), (expected, lines)
