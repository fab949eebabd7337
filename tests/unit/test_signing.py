"""Package signatures: only a trusted key's signature of this very package passes, and a
deliberate edit that recomputes every checksum is caught."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from tuneserve.exceptions import InvalidInputError
from tuneserve.package import MANIFEST_FILE, Package, _package_id, sha256_file
from tuneserve.signing import (
    SIGNATURE_FILE,
    SignatureError,
    generate_key,
    sign_package,
    verify_signature,
)


@pytest.fixture
def signed(cancer_package, tmp_path):
    """A copy of a real package, signed, and the key pair that signed it."""
    package = shutil.copytree(cancer_package, tmp_path / "pkg")
    private, public, key_id = generate_key(tmp_path / "keys" / "team")
    signature = sign_package(package, private)
    assert signature.key_id == key_id and signature.package_id == Package.load(package).id
    return package, private, public


def test_keygen_writes_a_secret_private_key_and_never_replaces_one(tmp_path):
    private, public, key_id = generate_key(tmp_path / "k")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.name == "k.pub" and key_id.startswith("ed25519:")
    with pytest.raises(InvalidInputError, match="already exists"):
        generate_key(tmp_path / "k")


def test_a_trusted_signature_passes(signed):
    package, _, public = signed
    assert verify_signature(package, [public]).startswith("ed25519:")


def test_an_unsigned_package_is_refused(cancer_package, tmp_path):
    _, public, _ = generate_key(tmp_path / "k")
    with pytest.raises(SignatureError, match=r"is not signed.*tuneserve package sign"):
        verify_signature(cancer_package, [public])


def test_a_package_signed_by_another_key_is_refused(signed, tmp_path):
    package, _, _ = signed
    _, stranger, _ = generate_key(tmp_path / "stranger")
    with pytest.raises(SignatureError, match="not a trusted key"):
        verify_signature(package, [stranger])


def test_an_edit_that_recomputes_every_checksum_is_caught(signed):
    """What checksums cannot catch: change the graph, then fix the manifest and the id."""
    package, _, public = signed
    graph = package / "model.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")  # the attacker's change
    raw = json.loads((package / MANIFEST_FILE).read_text())
    raw["files"]["model.onnx"] = sha256_file(graph)
    raw["package_id"] = _package_id(raw)
    (package / MANIFEST_FILE).write_text(json.dumps(raw))
    Package.load(package)  # every checksum and the id agree again
    with pytest.raises(SignatureError, match="changed after it was signed"):
        verify_signature(package, [public])


def test_a_forged_signature_is_refused(signed):
    package, _, public = signed
    path = Path(package) / SIGNATURE_FILE
    raw = json.loads(path.read_text())
    raw["signature"] = raw["signature"][:-4] + (
        "AAA=" if raw["signature"][-4:] != "AAA=" else "BBB="
    )
    path.write_text(json.dumps(raw))
    with pytest.raises(SignatureError, match="forged"):
        verify_signature(package, [public])


def test_keys_must_be_ed25519_key_files(signed, tmp_path):
    package, private, _ = signed
    with pytest.raises(InvalidInputError, match="no trusted key was given"):
        verify_signature(package, [])
    with pytest.raises(InvalidInputError, match="not a PEM public key"):
        verify_signature(package, [private])  # the private key where the public one goes
    with pytest.raises(InvalidInputError, match="not found"):
        sign_package(package, tmp_path / "missing")
