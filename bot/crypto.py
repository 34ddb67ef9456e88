"""Field encryption and keyed address hashing.

TRIAGE_ENCRYPTION_KEY holds one or more keys, comma-separated, each "keyid:base64(32 bytes)".
The first key encrypts; every listed key decrypts. To rotate: put a new key first, keep the
old ones, run `python -m bot rekey` (it re-encrypts everything with the new key), then
remove the old ones.

Addresses are looked up by HMAC-SHA256 under a lookup key derived from a key. A new address
is hashed under the first (newest) key; a lookup tries the hashes under every listed key,
and under "retired" lookup keys: those of keys already removed, which `rekey` keeps in the
database (encrypted with the newest key) for what it cannot hash again, such as an opted-out
contact who erased their conversation and left only the hash. So a rotation never loses an
opt-out, and an address is found whichever key hashed it.
"""

from __future__ import annotations

import base64
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
        # Newest first: a new address is hashed under the first.
        self._lookups: dict[str, bytes] = {
            kid: _derive(key, b"triage address lookup") for kid, key in keys
        }
        self._retired: dict[str, bytes] = {}

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

    @property
    def current_key_id(self) -> str:
        return self._current_id

    def key_id(self, token: str) -> str:
        """Which key a ciphertext was made with."""
        return token.partition(":")[0]

    def address_hash(self, channel: str, address: str) -> str:
        """The hash a new address is stored under: the newest key's."""
        return _hmac(next(iter(self._lookups.values())), channel, address)

    def address_hashes(self, channel: str, address: str) -> list[str]:
        """Every hash the address may be stored under, newest first, for lookups."""
        if len(self._lookups) == 1 and not self._retired:  # no rotation under way
            return [_hmac(next(iter(self._lookups.values())), channel, address)]
        keys = [*self._lookups.values(), *self._retired.values()]
        return list(dict.fromkeys(_hmac(key, channel, address) for key in keys))

    def older_lookup_keys(self) -> dict[str, bytes]:
        """The lookup keys of the keys after the first: `rekey` keeps them, so that what it
        cannot hash again is still found once those keys are removed."""
        return {kid: key for kid, key in list(self._lookups.items())[1:]}

    def retire(self, kid: str, lookup_key: bytes) -> None:
        """A lookup key kept from a removed key (loaded from the database at start)."""
        if kid not in self._lookups:
            self._retired[kid] = lookup_key


def _hmac(key: bytes, channel: str, address: str) -> str:
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).digest()
    # without building an HMAC object (this runs for every inbound message).
    return hmac.digest(key, f"{channel}\x00{address}".encode(), "sha256").hex()
