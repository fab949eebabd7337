"""serve --require-signature: only packages a trusted key signed are loaded, at start and
on every reload."""

from __future__ import annotations

import shutil

import pytest

from tuneserve.serving.config import ServeConfig, build_app
from tuneserve.signing import SignatureError, generate_key, sign_package


def test_only_signed_packages_are_served(cancer_package, tmp_path):
    package = shutil.copytree(cancer_package, tmp_path / "pkg")
    private, public, _ = generate_key(tmp_path / "team")
    config = ServeConfig(models=[f"cancer={package}"], trusted_keys=[str(public)], watch=0)
    with pytest.raises(SignatureError, match="is not signed"):
        build_app(config)

    sign_package(package, private)
    app = build_app(config)
    assert app.state.repository.get("cancer").version == "1"

    _, stranger, _ = generate_key(tmp_path / "stranger")
    other = ServeConfig(models=[f"cancer={package}"], trusted_keys=[str(stranger)], watch=0)
    with pytest.raises(SignatureError, match="not a trusted key"):
        build_app(other)


def test_require_signature_needs_a_trusted_key(cancer_package):
    from tuneserve.exceptions import InvalidInputError

    config = ServeConfig(models=[f"cancer={cancer_package}"], require_signature=True, watch=0)
    with pytest.raises(InvalidInputError, match="no trusted key was given"):
        build_app(config)
