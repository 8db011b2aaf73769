"""The signing keys `onnxtax sign` and `onnxtax verify --key` take: PEM elliptic-curve keys on the
curves OpenSSF model signing accepts (P-256, P-384, P-521), read and checked before any work, so
that a missing file, a key of the wrong kind or the wrong half of a pair is one line (exit 2).

The fingerprint names a public key the way the signature's own verification material does:
"sha256:" + the hex sha256 of its PEM SubjectPublicKeyInfo (the bundle's `publicKey.hint`).
An encrypted private key is opened with the password in $ONNXTAX_SIGN_KEY_PASSWORD.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from onnxtax.core.errors import OnnxtaxError

PASSWORD_ENV = "ONNXTAX_SIGN_KEY_PASSWORD"
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
NEW_KEY = "openssl ecparam -name prime256v1 -genkey -noout -out {path}"
PUBLIC_OF = "openssl ec -in PRIVATE.pem -pubout -out {path}"


class KeyFileError(OnnxtaxError):
    """A key file that is missing, unreadable, or not the key this command needs (exit 2)."""


def _read(path: Path, what: str, fix: str) -> bytes:
    if path.is_dir():
        raise KeyFileError(f"{what} {path} is a folder, not a key file", fix)
    if not path.is_file():
        raise KeyFileError(f"{what} {path} does not exist", fix)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}", fix) from exc


def _kind(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    for cls, name in ((rsa.RSAPrivateKey, "an RSA"), (rsa.RSAPublicKey, "an RSA"), (dsa.DSAPrivateKey, "a DSA"),
                      (dsa.DSAPublicKey, "a DSA"), (ed25519.Ed25519PrivateKey, "an Ed25519"),
                      (ed25519.Ed25519PublicKey, "an Ed25519"), (ed448.Ed448PrivateKey, "an Ed448"),
                      (ed448.Ed448PublicKey, "an Ed448")):
        if isinstance(key, cls):
            return name
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"a {key.curve.name} elliptic-curve"
    return f"a {type(key).__name__}"


def _check_curve(key: Any, path: Path, what: str, fix: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in CURVES:
        raise KeyFileError(f"{what} {path} is {_kind(key)} key; model signing takes an elliptic-curve key on "
                           f"{', '.join(CURVES.values())}", fix)


def load_private_key(path: str | Path) -> Any:
    """The elliptic-curve private key to sign with (cryptography's object)."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    fix = f"make one with `{NEW_KEY.format(path=path)}`"
    data = _read(path, "signing key", fix)
    password = os.environ.get(PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError as exc:  # encrypted without a password, or a password for a key that has none
        if password:
            raise KeyFileError(f"signing key {path} is not encrypted, but ${PASSWORD_ENV} is set",
                               f"unset {PASSWORD_ENV}") from exc
        raise KeyFileError(f"signing key {path} is encrypted", f"put its password in ${PASSWORD_ENV}") from exc
    except ValueError as exc:
        if _is_public(data):
            raise KeyFileError(f"signing key {path} is a public key; signing needs the private key",
                               "give the private key (--key PRIVATE.pem); the public key is for `onnxtax verify "
                               "--key`") from exc
        if password and b"ENCRYPTED" in data:
            raise KeyFileError(f"signing key {path} does not open with the password in ${PASSWORD_ENV}",
                               "set the key's password") from exc
        raise KeyFileError(f"signing key {path} is not a PEM private key", fix) from exc
    _check_curve(key, path, "signing key", fix)
    return key


def load_public_key(path: str | Path) -> Any:
    """The elliptic-curve public key to verify with (cryptography's object)."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    fix = f"give the public half of the signing key: `{PUBLIC_OF.format(path=path)}`"
    data = _read(path, "public key", fix)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        if b"PRIVATE KEY" in data:
            raise KeyFileError(f"public key {path} is a private key; verifying needs only the public key",
                               f"keep the private key to the signer and give `{PUBLIC_OF.format(path='KEY.pub')}`"
                               ) from exc
        raise KeyFileError(f"public key {path} is not a PEM public key", fix) from exc
    _check_curve(key, path, "public key", fix)
    return key


def _is_public(data: bytes) -> bool:
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_pem_public_key(data)
    except ValueError:
        return False
    return True


def fingerprint(key: Any) -> str:
    """"sha256:<hex>" of the public key's PEM SubjectPublicKeyInfo (a private key: of its public half)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(pem).hexdigest()


def public_pem(private_key_path: str | Path) -> bytes:
    """The PEM public half of a private key file (what a verifier is given)."""
    from cryptography.hazmat.primitives import serialization

    return load_private_key(private_key_path).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
