"""Field encryption and keyed address hashing.

TRIAGE_ENCRYPTION_KEY holds one or more keys, comma-separated, each "keyid:base64(32 bytes)".
The first key encrypts; every listed key decrypts, so a key is rotated by putting a new one
first and keeping the old ones until their data is gone (purge or re-encryption).

Addresses are looked up by HMAC-SHA256 under a key derived from the LAST listed key: the
oldest one, which stays in the list while any data from before a rotation exists. That way a
rotation never changes an address's hash, so an opted-out number stays opted out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
NONCE_BYTES = 12
ENV = "TRIAGE_ENCRYPTION_KEY"


class KeyMaterialError(ValueError):
    """The key material in the environment is unusable."""


class DecryptError(ValueError):
    """A ciphertext was made with an unknown key or was tampered with."""


def generate_key() -> str:
    key_id = base64.b32encode(os.urandom(5)).decode().lower()
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


class Cipher:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyMaterialError("no encryption key given")
        self._current_id = keys[0][0]
        self._aead = {kid: AESGCM(_derive(key, b"triage field encryption")) for kid, key in keys}
        self._lookup_key = _derive(keys[-1][1], b"triage address lookup")

    @classmethod
    def from_env_value(cls, value: str) -> Cipher:
        keys: list[tuple[str, bytes]] = []
        for part in value.split(","):
            kid, sep, material = part.strip().partition(":")
            if not sep or not KEY_ID.match(kid):
                raise KeyMaterialError(f"{ENV}: each key must look like keyid:base64")
            try:
                raw = base64.urlsafe_b64decode(material.encode())
            except ValueError:
                raise KeyMaterialError(f"{ENV}: key material is not base64") from None
            if len(raw) != 32:
                raise KeyMaterialError(f"{ENV}: each key must be 32 bytes (use keygen)")
            keys.append((kid, raw))
        if len({kid for kid, _ in keys}) != len(keys):
            raise KeyMaterialError(f"{ENV}: key ids must be unique")
        return cls(keys)

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self._current_id].encrypt(nonce, plaintext.encode("utf-8"), None)
        return f"{self._current_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str) -> str:
        kid, _, body = token.partition(":")
        aead = self._aead.get(kid)
        if aead is None:
            raise DecryptError(f"unknown key id {kid!r}")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None).decode("utf-8")
        except (InvalidTag, ValueError):
            raise DecryptError("ciphertext does not verify") from None

    def address_hash(self, channel: str, address: str) -> str:
        message = f"{channel}\x00{address}".encode()
        return hmac.new(self._lookup_key, message, hashlib.sha256).hexdigest()
