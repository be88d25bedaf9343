"""Shared keys, key files and the server's list of authorized keys.

A key is an id (a short name), 32 random octets and the rights it carries per
export: ``read`` (get, contains, listings, length, archive list and last),
``add`` (add, flush) and ``archive`` (archive update).  Rights are given per
export name; ``*`` stands for every export and ``""`` for the default export.

A client key file is one JSON object::

    {"vt_key": 1, "id": "laptop", "secret": "<64 hex digits>",
     "rights": {"*": "read,add,archive"}}

The server's authorized keys (`{basedir}/server-keys`, or `vt serve --auth-keys
FILE`) are the same objects, one per line.  Both are written mode 0600, and like
ssh we refuse to load either when its group or others may read or write it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field

from vtstore import fileio
from vtstore.errors import ConfigError

#: The three rights, in the order they are printed.
RIGHTS = ("read", "add", "archive")
ALL_RIGHTS = frozenset(RIGHTS)
#: Octets of a key's secret.
SECRET_SIZE = 32
#: Longest key id (it travels in the handshake, which is limited to 4096 octets).
MAX_ID = 64
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*\Z")


class KeyFileError(ConfigError):
    """A key file that is missing, unsafe or malformed."""


def check_key_id(key_id: str) -> str:
    """A key id: 1..64 of letters, digits and ``._@+-`` (not starting with one)."""
    if not isinstance(key_id, str) or not _ID_RE.match(key_id) or len(key_id) > MAX_ID:
        raise KeyFileError(f"bad key name {key_id!r}: say 1 to {MAX_ID} letters, digits or ._@+-")
    return key_id


def parse_rights(text: str) -> frozenset[str]:
    """``read,add,archive`` (or ``all``, or ``none``) -> a set of rights."""
    text = str(text).strip().lower()
    if text in ("all", "rw"):
        return ALL_RIGHTS
    if text in ("", "none"):
        return frozenset()
    out = set()
    for word in text.replace(" ", ",").split(","):
        if not word:
            continue
        if word == "ro":
            word = "read"
        if word not in ALL_RIGHTS:
            raise KeyFileError(f"unknown right {word!r} (say read, add, archive or all)")
        out.add(word)
    return frozenset(out)


def format_rights(rights) -> str:
    """A set of rights as ``read,add,archive`` (``none`` for the empty set)."""
    return ",".join(r for r in RIGHTS if r in rights) or "none"


@dataclass(frozen=True)
class Key:
    """A shared key: `id`, 32-octet `secret`, and `rights` (export name -> set)."""

    id: str
    secret: bytes = field(repr=False)
    rights: dict = field(default_factory=lambda: {"*": ALL_RIGHTS})

    @classmethod
    def generate(cls, key_id: str, rights: dict | None = None) -> Key:
        """A new key with a random secret."""
        return cls(
            check_key_id(key_id),
            secrets.token_bytes(SECRET_SIZE),
            dict(rights) if rights is not None else {"*": ALL_RIGHTS},
        )

    def rights_for(self, export: str) -> frozenset[str]:
        """What this key may do on `export` (its own entry, else ``*``)."""
        if export in self.rights:
            return frozenset(self.rights[export])
        return frozenset(self.rights.get("*", ()))

    def to_json(self) -> dict:
        """The JSON object of a key file line."""
        return {
            "vt_key": 1,
            "id": self.id,
            "secret": self.secret.hex(),
            "rights": {e: format_rights(r) for e, r in sorted(self.rights.items())},
        }

    @classmethod
    def from_json(cls, obj, where: str) -> Key:
        """Parse one key object; `where` names it in errors."""
        if not isinstance(obj, dict) or obj.get("vt_key") != 1:
            raise KeyFileError(f'{where}: not a vt key (no "vt_key": 1)')
        try:
            key_id = check_key_id(obj.get("id"))
            secret = bytes.fromhex(obj.get("secret", ""))
        except (TypeError, ValueError) as e:
            raise KeyFileError(f"{where}: bad key: {e}") from None
        if len(secret) != SECRET_SIZE:
            raise KeyFileError(f"{where}: key {key_id!r}: the secret must be {SECRET_SIZE} octets")
        rights = obj.get("rights", {"*": "all"})
        if not isinstance(rights, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in rights.items()
        ):
            raise KeyFileError(f"{where}: key {key_id!r}: rights must map export names to text")
        return cls(key_id, secret, {e: parse_rights(r) for e, r in rights.items()})


def parse_rights_options(rights: str | None, exports: list[str] | None) -> dict:
    """The rights map of `vt key new --rights R --export E...`: R on each export
    named (``-`` is the default export), else on every export (``*``)."""
    r = parse_rights(rights if rights is not None else "all")
    names = exports or ["*"]
    return {("" if e == "-" else e): r for e in names}


# -- files -------------------------------------------------------------------------


def check_private(path: str, st: os.stat_result | None = None) -> None:
    """Refuse a key file that the group or others may read or write."""
    st = st or os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} are too open:"
            " a key file must be readable by its owner only (chmod 600)"
        )


#: the largest key file or keyring read (about 30,000 keys)
MAX_KEY_FILE = 4 << 20


def _read_private(path: str, what: str) -> str:
    path = os.path.expanduser(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such {what}") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot open {what}: {e.strerror}") from None
    try:
        check_private(path, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_KEY_FILE + 1)
        if len(data) > MAX_KEY_FILE:  # never a silently shortened keyring
            raise KeyFileError(f"{path}: {what} is larger than {MAX_KEY_FILE >> 20} MiB")
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: {what} is not UTF-8 text") from None


def write_private(path: str, text: str, exclusive: bool = False) -> None:
    """Write `text` to `path` (mode 0600) atomically (`vtstore.fileio`); with
    `exclusive`, never over an existing file."""
    try:
        fileio.write_private(path, text.encode("utf-8"), replace=not exclusive)
    except FileExistsError:
        raise KeyFileError(f"{path}: exists already (remove it first)") from None


def load_key_file(path: str) -> Key:
    """A client's key from its key file (which must be 0600)."""
    text = _read_private(path, "key file")
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise KeyFileError(f"{path}: not a key file: {e}") from None
    return Key.from_json(obj, path)


def save_key_file(path: str, key: Key) -> None:
    """Write a client key file, mode 0600; an existing file is not overwritten."""
    write_private(path, json.dumps(key.to_json(), sort_keys=True) + "\n", exclusive=True)


class KeyRing:
    """The keys a server accepts, by id (its authorized keys)."""

    def __init__(self, keys=(), path: str | None = None):
        self.path = path
        self.keys: dict[str, Key] = {}
        for k in keys:
            self.add(k)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        return iter(self.keys.values())

    def get(self, key_id: str) -> Key | None:
        """The key called `key_id`, or None."""
        return self.keys.get(key_id)

    def add(self, key: Key) -> None:
        """Add a key; a second key of the same id is an error."""
        if key.id in self.keys:
            raise KeyFileError(f"a key named {key.id!r} exists already")
        self.keys[key.id] = key

    def remove(self, key_id: str) -> Key:
        """Remove and return the key `key_id`."""
        try:
            return self.keys.pop(key_id)
        except KeyError:
            raise KeyFileError(f"no key named {key_id!r}") from None

    @classmethod
    def load(cls, path: str, missing_ok: bool = False) -> KeyRing:
        """Read an authorized-keys file (one key object per line; `#` comments)."""
        path = os.path.expanduser(os.fspath(path))
        if missing_ok and not os.path.lexists(path):
            return cls(path=path)
        text = _read_private(path, "authorized keys file")
        ring = cls(path=path)
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise KeyFileError(f"{path}:{n}: not a key: {e}") from None
            key = Key.from_json(obj, f"{path}:{n}")
            if ring.get(key.id) is not None:
                raise KeyFileError(f"{path}:{n}: a second key named {key.id!r}")
            ring.add(key)
        return ring

    def save(self, path: str | None = None) -> None:
        """Write the authorized-keys file, mode 0600."""
        path = path or self.path
        lines = [json.dumps(k.to_json(), sort_keys=True) for k in self.keys.values()]
        write_private(path, "".join(line + "\n" for line in lines))


def default_server_keys(config) -> str:
    """Where `vt serve` and `vt key` keep the server's keys: `{basedir}/server-keys`."""
    return os.path.join(str(config.basedir), "server-keys")


def default_key_dir(config) -> str:
    """Where `vt key new` writes client key files: `{basedir}/keys/`."""
    return os.path.join(str(config.basedir), "keys")
