"""The crypt key file: a random master key wrapped by a passphrase.

A key file is a small JSON document, 0600::

    {"format": "vtstore-crypt-key", "version": 1, "key_id": "<16 hex>",
     "kdf": {"name": "scrypt", "log_n": 17, "r": 8, "p": 1, "salt": "<base64>"},
     "cipher": "aes-256-gcm", "wrapped": "<base64 of nonce(12) || ciphertext+tag>",
     "created": "2026-12-07T11:00:00Z"}

The master key (32 random octets) is encrypted with AES-256-GCM under a key
encryption key (KEK) derived from the passphrase by scrypt (memory-hard: n=2^17,
r=8 takes 128 MiB and a good fraction of a second, per guess).  The associated
data binds the key id and the KDF parameters, so editing them is detected like a
wrong passphrase.  `rewrap` encrypts the same master key under a new passphrase
(new salt, new nonce): nothing stored under the key changes.  Lose the passphrase
and the data is lost: there is no recovery key.

The subkeys used for blocks, names, the index and archives are derived from the
master key with HMAC-SHA256 under distinct labels, so no key serves two
purposes.
"""

from __future__ import annotations

import base64
import getpass
import hmac
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vtstore.errors import ConfigError, StoreError
from vtstore.fileio import write_private

FORMAT_NAME = "vtstore-crypt-key"
FORMAT_VERSION = 1
DEFAULT_LOG_N = 17
MIN_LOG_N = 10  # lower than any real use (17, the default): tests use 12 to be quick
MAX_LOG_N = 20  # 1 GiB of memory per guess with r=8: more is a typo
#: the most memory a key file may ask scrypt for (128 * r * n octets)
MAX_SCRYPT_MEMORY = 1 << 30
MAX_KEY_FILE = 1 << 16
SCRYPT_R = 8
SCRYPT_P = 1
KEY_SIZE = 32


class CryptKeyError(StoreError):
    """A key file that cannot be used: missing, damaged, or the wrong passphrase."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s, what: str, path) -> bytes:
    try:
        return base64.b64decode(str(s).encode("ascii"), validate=True)
    except (ValueError, UnicodeError):
        raise CryptKeyError(f"{path}: damaged key file ({what} is not base64)") from None


def derive_kek(passphrase: bytes, salt: bytes, log_n: int, r: int = SCRYPT_R, p: int = SCRYPT_P):
    """The key encryption key scrypt derives from `passphrase`."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=KEY_SIZE, n=1 << log_n, r=r, p=p).derive(passphrase)


def _aad(key_id: str, log_n: int, r: int, p: int) -> bytes:
    return f"{FORMAT_NAME}/{FORMAT_VERSION} id={key_id} scrypt n=2^{log_n} r={r} p={p}".encode()


@dataclass(frozen=True)
class MasterKey:
    """An unwrapped master key and the subkeys derived from it."""

    key_id: str
    secret: bytes

    def subkey(self, label: str) -> bytes:
        """The 32-octet key for one purpose (`block`, `name`, `index`, `archive`)."""
        return hmac.digest(self.secret, b"vtstore-crypt/1 " + label.encode(), "sha256")

    def __repr__(self) -> str:  # never print the secret
        return f"MasterKey({self.key_id})"


def read_key_file(path) -> dict:
    """The key file's JSON document, checked for shape (not for the passphrase)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_KEY_FILE + 1)
        if len(raw) > MAX_KEY_FILE:
            raise CryptKeyError(f"{path}: not a crypt key file (too large)")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise CryptKeyError(f"{path}: no such key file (create one with: vt crypt init)") from None
    except (OSError, UnicodeError) as e:
        raise CryptKeyError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise CryptKeyError(f"{path}: not a crypt key file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise CryptKeyError(f"{path}: not a crypt key file")
    if doc.get("version") != FORMAT_VERSION:
        raise CryptKeyError(f"{path}: unsupported key file version {doc.get('version')!r}")
    kdf = doc.get("kdf")
    ok = (
        isinstance(kdf, dict)
        and kdf.get("name") == "scrypt"
        and all(type(kdf.get(k)) is int for k in ("log_n", "r", "p"))
        and isinstance(doc.get("key_id"), str)
        and len(doc["key_id"]) == 16
        and doc.get("cipher") == "aes-256-gcm"
        and isinstance(doc.get("wrapped"), str)
    )
    if not ok:
        raise CryptKeyError(f"{path}: damaged key file (bad fields)")
    if not (
        MIN_LOG_N <= kdf["log_n"] <= MAX_LOG_N
        and 1 <= kdf["r"] <= 32
        and 1 <= kdf["p"] <= 4
        and 128 * kdf["r"] << kdf["log_n"] <= MAX_SCRYPT_MEMORY
    ):
        raise CryptKeyError(f"{path}: damaged key file (scrypt parameters out of range)")
    return doc


def unwrap(path, passphrase: bytes) -> MasterKey:
    """The master key of key file `path`; `CryptKeyError` on a wrong passphrase."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    doc = read_key_file(path)
    kdf = doc["kdf"]
    salt = _unb64(kdf.get("salt", ""), "the salt", path)
    wrapped = _unb64(doc["wrapped"], "the wrapped key", path)
    if len(salt) < 16 or len(wrapped) != 12 + KEY_SIZE + 16:
        raise CryptKeyError(f"{path}: damaged key file (bad lengths)")
    try:
        kek = derive_kek(passphrase, salt, kdf["log_n"], kdf["r"], kdf["p"])
    except (ValueError, MemoryError) as e:
        raise CryptKeyError(f"{path}: scrypt failed: {e}") from None
    try:
        secret = AESGCM(kek).decrypt(
            wrapped[:12], wrapped[12:], _aad(doc["key_id"], kdf["log_n"], kdf["r"], kdf["p"])
        )
    except InvalidTag:
        raise CryptKeyError(f"{path}: wrong passphrase (or a damaged key file)") from None
    return MasterKey(doc["key_id"], secret)


def _wrap_doc(key: MasterKey, passphrase: bytes, log_n: int, created: str) -> dict:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt = os.urandom(16)
    kek = derive_kek(passphrase, salt, log_n)
    nonce = os.urandom(12)
    ct = AESGCM(kek).encrypt(nonce, key.secret, _aad(key.key_id, log_n, SCRYPT_R, SCRYPT_P))
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "key_id": key.key_id,
        "kdf": {"name": "scrypt", "log_n": log_n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "cipher": "aes-256-gcm",
        "wrapped": _b64(nonce + ct),
        "created": created,
    }


def _write_private(path: Path, doc: dict, replace: bool) -> None:
    """Write `doc` to `path` 0600, durably; with `replace`, atomically over it,
    else never over an existing key (that would lose data)."""
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    try:
        write_private(path, data, replace=replace)
    except FileExistsError:
        raise CryptKeyError(
            f"{path}: a key file exists already (vt crypt passwd re-wraps it)"
        ) from None
    except OSError as e:
        raise CryptKeyError(f"{path}: {e.strerror}") from None


def create_key_file(path, passphrase: bytes, log_n: int = DEFAULT_LOG_N) -> MasterKey:
    """Make a new master key, wrap it with `passphrase`, write it to `path`
    (which must not exist) 0600, and return it."""
    if not MIN_LOG_N <= log_n <= MAX_LOG_N:
        raise ConfigError(f"scrypt log2(n) must be {MIN_LOG_N}..{MAX_LOG_N}, not {log_n}")
    if not passphrase:
        raise ConfigError("an empty passphrase protects nothing")
    key = MasterKey(os.urandom(8).hex(), os.urandom(KEY_SIZE))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_private(Path(path), _wrap_doc(key, passphrase, log_n, created), replace=False)
    return key


def rewrap(path, old: bytes, new: bytes, log_n: int | None = None) -> MasterKey:
    """Wrap the master key of `path` with passphrase `new` instead of `old`
    (checked first), atomically; the data under the key is untouched."""
    if not new:
        raise ConfigError("an empty passphrase protects nothing")
    doc = read_key_file(path)
    key = unwrap(path, old)
    n = doc["kdf"]["log_n"] if log_n is None else log_n
    if not MIN_LOG_N <= n <= MAX_LOG_N:
        raise ConfigError(f"scrypt log2(n) must be {MIN_LOG_N}..{MAX_LOG_N}, not {n}")
    _write_private(Path(path), _wrap_doc(key, new, n, str(doc.get("created", ""))), replace=True)
    return key


def key_info(path) -> dict:
    """What `vt crypt info` shows: nothing secret, no passphrase needed."""
    doc = read_key_file(path)
    kdf = doc["kdf"]
    return {
        "key_file": str(path),
        "key_id": doc["key_id"],
        "cipher": doc["cipher"],
        "kdf": f"scrypt n=2^{kdf['log_n']} r={kdf['r']} p={kdf['p']}",
        "created": doc.get("created"),
    }


def get_passphrase(
    passphrase_file=None, prompt: str = "passphrase: ", env: str | None = "VT_PASSPHRASE"
) -> bytes:
    """The passphrase: `$VT_PASSPHRASE`, else the first line of
    `passphrase_file`, else asked on the terminal; `ConfigError` if none."""
    v = os.environ.get(env) if env else None
    if v:
        return v.encode()
    if passphrase_file:
        p = os.path.expanduser(str(passphrase_file))
        try:
            with open(p, "rb") as f:
                line = f.read(65536).split(b"\n", 1)[0].rstrip(b"\r")
        except OSError as e:
            raise ConfigError(f"passphrase file {p}: {e.strerror}") from None
        if not line:
            raise ConfigError(f"passphrase file {p}: empty first line")
        return line
    if has_tty():
        try:
            v = getpass.getpass(prompt)
        except (EOFError, KeyboardInterrupt):
            v = ""
        if v:
            return v.encode()
    raise ConfigError(
        f"no passphrase: set ${env}, give passphrase_file in the clause, or run on a terminal"
    )


def has_tty() -> bool:
    """Whether a terminal can be asked for a passphrase."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return sys.stdin is not None
