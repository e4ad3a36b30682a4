"""A certificate authority per lab and the API server's certificate, made once with openssl.

The API server always speaks TLS: kubectl sends a bearer token only over TLS, and a later multi-VM
lab needs it off loopback anyway. The kubeconfig carries the CA, so clients verify the server."""
from __future__ import annotations

import ipaddress
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
DAYS = "3650"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def client_context(ca_file: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def ensure(directory: Path, name: str, hosts: list[str]) -> Certificates:
    """The CA and a server certificate for `hosts` (IPs or DNS names) in `directory`; kept if present
    and naming them all.
    A CA already there (ca.crt and ca.key, e.g. one CA shared by the replicas of a control plane)
    signs the certificate; else a CA is made."""
    certs = Certificates(directory / "ca.crt", directory / "apiserver.crt", directory / "apiserver.key")
    if certs.ca.exists() and certs.cert.exists() and certs.key.exists() and names_all(certs.cert, hosts):
        return certs
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = directory / "ca.key"
    if not (certs.ca.exists() and ca_key.exists()):
        make_ca(directory, name)
    sans = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    extensions = directory / "apiserver.ext"
    extensions.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n")
    request = directory / "apiserver.csr"
    _openssl("req", *EC_KEY, "-keyout", str(certs.key), "-out", str(request), "-subj", "/CN=netplane-apiserver")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(certs.ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(certs.cert), "-days", DAYS, "-extfile", str(extensions))
    for leftover in (request, extensions, directory / "ca.srl"):
        leftover.unlink(missing_ok=True)
    certs.key.chmod(0o600)
    return certs


def names_all(cert: Path, hosts: list[str]) -> bool:
    """Whether the certificate's subjectAltNames include every one of hosts."""
    try:
        sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))
    return set(hosts) <= have


def make_ca(directory: Path, name: str) -> Path:
    """A new CA (ca.crt, and ca.key with mode 0600) in directory; the certificate's path."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    _openssl("req", "-x509", *EC_KEY, "-keyout", str(ca_key), "-out", str(ca), "-days", DAYS,
             "-subj", f"/CN=netplane-{name}-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ca_key.chmod(0o600)
    return ca


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
