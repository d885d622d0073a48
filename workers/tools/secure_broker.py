"""The local broker, secured as production clusters are: SASL_SSL with SCRAM-SHA-512, TLS from
a certificate authority made on the spot, and ACLs enforced.

For tests and for trying a secured setup by hand. The CA and the broker's certificate (for
127.0.0.1) are made with ``cryptography`` in the broker's state directory; SCRAM users are
written into the storage by Kafka's own formatting tool (``--add-scram``); the broker runs
Kafka's ``StandardAuthorizer`` with ``admin`` as super user and every resource open until an
ACL says otherwise (so a test can deny one topic to one user).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings
from workers.tools.local_broker import LocalBroker, answers

ADMIN = "admin"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(directory: Path) -> tuple[Path, Path]:
    """A CA (``ca.pem``) and a broker key + certificate chain for 127.0.0.1/localhost signed by
    it (``broker.pem``, PKCS#8, as Kafka's PEM keystore reads it). Returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("foresight test CA"))
        .issuer_name(_name("foresight test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, broker_file = directory / "ca.pem", directory / "broker.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    broker_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca.public_bytes(pem)
    )
    broker_file.chmod(0o600)
    return ca_file, broker_file


SECURED = """\
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required \
username="{admin}" password="{admin_password}";
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{admin};User:ANONYMOUS
allow.everyone.if.no.acl.found=true
"""
"""What the secured broker changes. The controller listener stays on loopback in plaintext
(its principal, ANONYMOUS, is the controller itself); clients see only SASL_SSL."""


@dataclass
class SecureLocalBroker(LocalBroker):
    """A LocalBroker reachable only over SASL_SSL + SCRAM-SHA-512, with ACLs enforced.

    ``users`` (name → password) are created at format time besides ``admin``."""

    users: dict[str, str] = field(default_factory=dict)
    admin_password: str = "admin-secret"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "tls" / "ca.pem"

    def listener_properties(self) -> str:
        if not self.ca_file.exists():
            make_tls(self.ca_file.parent)
        return SECURED.format(
            port=self.port,
            controller_port=self.controller_port,
            admin=ADMIN,
            admin_password=self.admin_password,
            keystore=self.ca_file.parent / "broker.pem",
            truststore=self.ca_file,
        )

    def format_args(self) -> list[str]:
        args = []
        for name, password in {ADMIN: self.admin_password, **self.users}.items():
            args += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return args

    def client_settings(self, user: str, password: str, **overrides: object) -> Settings:
        """Settings of a client of this broker as ``user``."""
        return Settings(
            broker=f"kafka://{self.bootstrap}",
            broker_port=self.port,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user,
            sasl_password=SecretStr(password),
            ssl_cafile=self.ca_file,
            **overrides,  # type: ignore[arg-type]
        )

    def answers(self, timeout: float = 2.0) -> bool:
        if not self.ca_file.exists():
            return False
        admin = aiokafka_kwargs(self.client_settings(ADMIN, self.admin_password))
        admin.pop("bootstrap_servers")
        return answers(self.bootstrap, timeout, **admin)
