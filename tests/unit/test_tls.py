"""``model-proxy tls`` writes a server certificate that can vouch for nothing else."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from model_proxy.tls import write_self_signed


def _written(tmp_path: Path) -> tuple[x509.Certificate, Path]:
    cert, key = tmp_path / "zhiva.crt", tmp_path / "zhiva.key"
    write_self_signed(cert, key, ["localhost", "127.0.0.1"])
    return x509.load_pem_x509_certificate(cert.read_bytes()), key


def test_the_certificate_is_a_leaf_for_tls_servers(tmp_path: Path) -> None:
    certificate, _ = _written(tmp_path)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    purposes = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(purposes) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_it_names_the_hosts_and_keeps_the_key_private(tmp_path: Path) -> None:
    certificate, key = _written(tmp_path)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
