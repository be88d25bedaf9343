"""Encrypted archive lines: how a crypt store writes the states of its archives.

    line := "!vtcrypt1:" base64(nonce (12) || AES-256-GCM(archive key, nonce,
                                 the plain line, aad = "vtcrypt-archive1 " key id))

docs/FORMATS.md §12.4; `vtstore.archive.register_line_codec` installs the codec.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag

from vtstore.errors import FormatError

ARCHIVE_PREFIX = b"!vtcrypt1:"


class ArchiveLineCodec:
    """Encrypts archive lines (see `vtstore.archive.register_line_codec`):
    `!vtcrypt1:` + base64(nonce || AES-256-GCM(archive key, nonce, line, key id))."""

    def __init__(self, key: bytes, key_id: str):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._aad = b"vtcrypt-archive1 " + key_id.encode()

    def encode(self, line: bytes) -> bytes:
        """The encrypted form of one line (no newline in or out)."""
        nonce = os.urandom(12)
        return ARCHIVE_PREFIX + base64.b64encode(
            nonce + self._aead.encrypt(nonce, bytes(line), self._aad)
        )

    def decode(self, raw: bytes) -> bytes:
        """The line `encode` made; `FormatError` for anything else."""
        raw = raw.rstrip(b"\r")
        if not raw.startswith(ARCHIVE_PREFIX):
            raise FormatError("not an encrypted archive line")
        try:
            blob = base64.b64decode(raw[len(ARCHIVE_PREFIX) :], validate=True)
        except ValueError:
            raise FormatError("an encrypted line that is not base64") from None
        if len(blob) < 28:
            raise FormatError("an encrypted line too short to hold a state")
        try:
            return self._aead.decrypt(blob[:12], blob[12:], self._aad)
        except InvalidTag:
            raise FormatError(
                "an encrypted line that fails authentication (tampered, or another key)"
            ) from None
