"""Package signatures: Ed25519 over the package id, so that a team can serve only what its
own pipeline built.

Checksums (the manifest's sha256 per file, and the package id, a hash of the manifest)
catch accidents: a truncated copy, a flipped bit, an edited file. They do not stop a
deliberate edit, because whoever edits a file can recompute every checksum and the id. A
signature can only be made with the team's private key: ``signature.json`` beside the
manifest holds an Ed25519 signature of the package id, and the id covers the manifest,
which covers every file. A package whose files, manifest or id changed no longer matches
its signature.

The signature file is not listed in the manifest (it is made after the package is
written, and signing does not change the package id).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tuneserve.atomic import write_bytes, write_text
from tuneserve.exceptions import InvalidInputError, PackageError
from tuneserve.package import SIGNATURE_FILE, Package

__all__ = [
    "SIGNATURE_FILE",
    "Signature",
    "SignatureError",
    "generate_key",
    "sign_package",
    "verify_signature",
]

#: What is signed: this prefix and the package id (a domain separator, so that a signature
#: of a package can never be replayed as a signature of anything else).
_DOMAIN = b"tuneserve-package-signature-v1:"


class SignatureError(PackageError):
    """A package is unsigned, or its signature is not by a trusted key or does not match."""


@dataclass(frozen=True)
class Signature:
    """A package's signature: the id it signs, the signing key's id, the signature."""

    package_id: str
    key_id: str
    signature: bytes

    def to_json(self) -> str:
        return json.dumps(
            {
                "algorithm": "ed25519",
                "package_id": self.package_id,
                "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode(),
            },
            indent=2,
        )


def _key_id(public_key: object) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    assert isinstance(public_key, Ed25519PublicKey)
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def generate_key(out: str | Path, *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Make an Ed25519 key pair: the private key at ``out`` (PEM, mode 0600) and the public
    key at ``out.pub``; returns both paths and the key id.

    Raises:
        InvalidInputError: ``out`` exists (a key is never replaced unless ``overwrite``).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = Path(out).expanduser()
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise InvalidInputError(
                f"{path} already exists; a key is never replaced silently. Hint: choose "
                "another --out, or pass --force"
            )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    secret = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_bytes(private_path, secret, private=True)
    public = key.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_text(public_path, pem.decode())
    return private_path, public_path, _key_id(public)


def _load_key(path: str | Path, private: bool) -> object:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    file = Path(path).expanduser()
    what = "private" if private else "public"
    if not file.is_file():
        raise InvalidInputError(
            f"{what} key {file} not found. Hint: make a key pair with tuneserve package keygen"
        )
    data = file.read_bytes()
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"{file} is not a PEM {what} key ({exc}). Hint: pass the file tuneserve package "
            f"keygen wrote ({'KEY' if private else 'KEY.pub'})"
        ) from exc
    wanted = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, wanted):
        raise InvalidInputError(
            f"{file} is a {type(key).__name__}, not an Ed25519 {what} key. Hint: make one "
            "with tuneserve package keygen"
        )
    return key


def sign_package(package: str | Path | Package, key: str | Path) -> Signature:
    """Verify ``package`` and write its signature by the private ``key`` beside its
    manifest (replacing an earlier signature)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pkg = package if isinstance(package, Package) else Package.load(package)
    pkg.verify()  # never sign a package that is already damaged
    private = _load_key(key, private=True)
    assert isinstance(private, Ed25519PrivateKey)
    signature = Signature(
        package_id=pkg.id,
        key_id=_key_id(private.public_key()),
        signature=private.sign(_DOMAIN + pkg.id.encode()),
    )
    write_text(pkg.path / SIGNATURE_FILE, signature.to_json() + "\n")
    return signature


def _read_signature(pkg: Package) -> Signature:
    path = pkg.path / SIGNATURE_FILE
    if not path.is_file() or path.is_symlink():
        raise SignatureError(
            f"package {pkg.path} is not signed, and a signature is required. Hint: sign it "
            "with tuneserve package sign PACKAGE --key KEY"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Signature(
            package_id=str(raw["package_id"]),
            key_id=str(raw["key_id"]),
            signature=base64.b64decode(raw["signature"], validate=True),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(
            f"{path} is not a valid signature file ({exc}). Hint: sign the package again"
        ) from exc


def verify_signature(package: str | Path | Package, trusted_keys: Sequence[str | Path]) -> str:
    """Check that ``package`` is signed by one of ``trusted_keys`` (public key files) and
    that the signature is of this package; returns the signing key's id.

    Raises:
        SignatureError: unsigned, signed for another package id, or by no trusted key.
        InvalidInputError: no trusted key given, or a key file that is not one.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not trusted_keys:
        raise InvalidInputError(
            "a signature is required but no trusted key was given. Hint: pass --trusted-key "
            "KEY.pub (the public key of the key that signs your packages)"
        )
    pkg = package if isinstance(package, Package) else Package.load(package)
    signature = _read_signature(pkg)
    if signature.package_id != pkg.id:
        raise SignatureError(
            f"the signature of {pkg.path} is for package {signature.package_id}, but the "
            f"package is {pkg.id}: it changed after it was signed. Hint: rebuild it, or sign "
            "it again if the change is yours"
        )
    keys = [_load_key(k, private=False) for k in trusted_keys]
    for key in keys:
        assert isinstance(key, Ed25519PublicKey)
        try:
            key.verify(signature.signature, _DOMAIN + pkg.id.encode())
        except InvalidSignature:
            continue
        return _key_id(key)
    trusted = ", ".join(_key_id(k) for k in keys)
    raise SignatureError(
        f"package {pkg.path} is signed by {signature.key_id}, which is not a trusted key "
        f"({trusted}), or its signature is forged. Hint: pass the right --trusted-key"
    )
