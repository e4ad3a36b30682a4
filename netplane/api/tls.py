"""A certificate authority per lab and the API server's certificate, made once (EC P-256 keys, through
the cryptography library).

The API server always speaks TLS: kubectl sends a bearer token only over TLS, and a later multi-VM
lab needs it off loopback anyway. The kubeconfig carries the CA, so clients verify the server."""
from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netplane import names

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
    _issue(certs.cert, certs.key, "netplane-apiserver", ExtendedKeyUsageOID.SERVER_AUTH, hosts, ca=certs.ca)
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
    ca = directory / "ca.crt"
    _issue(ca, directory / "ca.key", f"netplane-{name}-ca", None)
    return ca


KUBELET_CLIENT = "apiserver-kubelet-client"  # kubeadm's name for the API server's certificate towards kubelets


def _issue(cert: Path, key: Path, common_name: str, usage: x509.ObjectIdentifier | None, hosts: list[str] = (),
           organization: str = "", ca: Path | None = None) -> None:
    """A new EC key (P-256) and a certificate for it, signed by the CA (ca and its .key beside it)
    or by itself when ca is None; ``usage`` None makes a CA (keyCertSign, cRLSign)."""
    own = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        names.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(names)
    if ca is None:
        issuer, signer = subject, own
    else:
        issuer = x509.load_pem_x509_certificate(ca.read_bytes()).subject
        signer = serialization.load_pem_private_key(ca.with_suffix(".key").read_bytes(), None)
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(own.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + datetime.timedelta(days=int(DAYS)))
               .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=usage is not None, key_cert_sign=usage is None, crl_sign=usage is None,
                   content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                   encipher_only=False, decipher_only=False), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]), critical=False)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.touch(mode=0o600)
    key.write_bytes(own.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    cert.write_bytes(builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def kubelet_client(directory: Path) -> tuple[Path, Path]:
    """The API server's client certificate and key towards node agents' kubelet ports, signed by
    the CA in directory (made by ensure), as kubeadm's apiserver-kubelet-client (O=system:masters)."""
    cert, key = directory / f"{KUBELET_CLIENT}.crt", directory / f"{KUBELET_CLIENT}.key"
    if not (cert.exists() and key.exists()):
        _issue(cert, key, "kube-apiserver-kubelet-client", ExtendedKeyUsageOID.CLIENT_AUTH,
               organization="system:masters", ca=directory / "ca.crt")
    return cert, key


def self_signed(directory: Path, name: str, hosts: list[str]) -> tuple[Path, Path]:
    """A serving certificate that signs itself (``<name>.crt``, ``<name>.key``) for hosts, as a
    kubelet makes one when none is given; kept while it names them all."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    if not (cert.exists() and key.exists() and names_all(cert, hosts)):
        _issue(cert, key, f"{hosts[0]}@{name}", ExtendedKeyUsageOID.SERVER_AUTH, hosts)
    return cert, key


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def apiserver_names(service_cidr: str, cluster_domain: str, *addresses: str) -> list[str]:
    """What the API server's certificate names: its own addresses, the `kubernetes` Service's IP and
    DNS names in the cluster's domain (so an in-cluster client verifies it), and loopback."""
    return [*addresses, names.kubernetes_service_ip(service_cidr), "kubernetes", "kubernetes.default",
            "kubernetes.default.svc", f"kubernetes.default.svc.{cluster_domain}", "127.0.0.1", "localhost"]
