"""A backend on an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph
RGW, ...), through `obstore` (the Rust `object_store` crate).

Why obstore rather than boto3: measured against SeaweedFS on loopback
(docs/PERFORMANCE.md, "Object storage"), obstore did 600 small (8 KiB) PUTs a
second on one thread and 1,760 on 16 (boto3: 250 and 400, its pool and the GIL
cap it), 900/3,200 small GETs (boto3: 360/450), and large objects at least as
fast; it releases the GIL for the whole request, has no dependency tree, and
also speaks GCS and Azure.  Retries are done by `Retrying` above it, not by
obstore (so one policy, and tests can see them).

Payload signing: a SigV4 request may sign its body's SHA-256 or say
`UNSIGNED-PAYLOAD`.  Signing costs the client a SHA-256 of every octet
uploaded (0.6 CPU s per GiB here, 11% of a first pack's CPU) and the server
its check (about 0.3 CPU s per GiB on SeaweedFS), and protects only what
crosses a wire without TLS.  So `sign_payload = auto` (the default) leaves
bodies unsigned over `https://` (TLS already protects them; AWS itself when
no endpoint is given) and over loopback (no wire), and signs them over plain
HTTP to any other host; `yes`/`no` force it (`payload_signed`).

Credentials, in order: the clause's `access_key_id`/`secret_access_key`, the
usual environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`), then the profile `AWS_PROFILE` (else `default`) of
`~/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`).
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from vtstore.stores.backends.base import (
    AccessDeniedError,
    Backend,
    BackendError,
    ObjectInfo,
    TransientBackendError,
    check_name,
)

_STATUS = re.compile(r"status code: (\d{3})")


def aws_credentials(profile: str | None = None) -> dict:
    """Credentials from the environment, else from the shared credentials file
    (`access_key_id`, `secret_access_key` and maybe `token`); empty if none."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY") and not profile:
        out = {
            "access_key_id": env["AWS_ACCESS_KEY_ID"],
            "secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        }
        if env.get("AWS_SESSION_TOKEN"):
            out["token"] = env["AWS_SESSION_TOKEN"]
        return out
    path = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    cp = configparser.ConfigParser()
    try:
        cp.read(path)
    except (configparser.Error, OSError):
        return {}
    section = profile or env.get("AWS_PROFILE") or "default"
    if not cp.has_section(section):
        return {}
    s = cp[section]
    out = {}
    if s.get("aws_access_key_id") and s.get("aws_secret_access_key"):
        out = {
            "access_key_id": s["aws_access_key_id"],
            "secret_access_key": s["aws_secret_access_key"],
        }
        if s.get("aws_session_token"):
            out["token"] = s["aws_session_token"]
    return out


SIGN_PAYLOAD = ("auto", "yes", "no")


def payload_signed(endpoint: str | None, sign: str = "auto") -> bool:
    """Whether uploads to `endpoint` sign their body's SHA-256: `sign` is
    `yes`, `no`, or `auto`: only over plain HTTP to a host that is not a
    loopback address (TLS, or no wire at all, leaves nothing for the
    signature to protect; see the module docstring)."""
    if sign not in SIGN_PAYLOAD:
        raise ValueError(f"sign_payload is auto, yes or no, not {sign!r}")
    if sign != "auto":
        return sign == "yes"
    if not endpoint:
        return False  # AWS: https
    u = urlsplit(endpoint)
    if u.scheme.lower() != "http":
        return False
    host = (u.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: it may be anywhere


def _one_line(e: BaseException) -> str:
    text = str(e)
    m = _STATUS.search(text)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    first = text.split("\n", 1)[0]
    if m:
        first = first.split(" - ")[0] + f" (HTTP {m.group(1)}{' ' + code.group(1) if code else ''})"
    return first[:300]


class S3Backend(Backend):
    """Objects under `prefix` of one bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        timeout: float = 120.0,
        sign_payload: str = "auto",
    ):
        """`sign_payload`: `auto`, `yes` or `no` (`payload_signed`)."""
        from obstore.store import S3Store

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        creds = {}
        if access_key_id and secret_access_key:
            creds = {"access_key_id": access_key_id, "secret_access_key": secret_access_key}
            if session_token:
                creds["token"] = session_token
        else:
            creds = aws_credentials(profile)
        config = {
            "region": region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
            **creds,
        }
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            config["endpoint"] = endpoint
            config["virtual_hosted_style_request"] = False
        if not creds:
            config["skip_signature"] = True  # a public bucket: anonymous requests
        #: whether uploads carry their body's SHA-256 in the signature
        self.signs_payload = payload_signed(endpoint, sign_payload)
        if not self.signs_payload:
            config["unsigned_payload"] = True
        try:
            self._store = S3Store(
                bucket,
                prefix=self.prefix or None,
                config=config,
                client_options={
                    "allow_http": True,
                    "timeout": f"{int(timeout)}s",
                    "connect_timeout": "10s",
                    "pool_max_idle_per_host": "64",
                },
                retry_config={"max_retries": 0},
            )
        except Exception as e:  # obstore's configuration errors
            raise BackendError(f"{self.url}: {_one_line(e)}") from None

    def _error(self, what: str, name: str, e: BaseException) -> BackendError:
        from obstore import exceptions as X

        where = f"{self.url}: {what} {name}: {_one_line(e)}"
        m = _STATUS.search(str(e))
        if isinstance(e, (X.PermissionDeniedError, X.UnauthenticatedError)) or (
            m and m.group(1) in ("401", "403")
        ):
            return AccessDeniedError(
                f"{self.url}: {what} {name}: access denied (check the credentials and"
                f" the bucket's policy): {_one_line(e)}"
            )
        if m and m.group(1).startswith("4") and m.group(1) not in ("408", "429"):
            return BackendError(where)
        if isinstance(e, (X.BaseError, OSError, ConnectionError, TimeoutError)):
            return TransientBackendError(where)
        return BackendError(where)

    def put(self, name, data) -> None:
        import obstore

        try:
            obstore.put(self._store, check_name(name), data, use_multipart=False)
        except Exception as e:
            raise self._error("writing", name, e) from None

    def put_if_absent(self, name, data) -> bool:
        import obstore
        from obstore import exceptions as X

        try:
            obstore.put(self._store, check_name(name), data, mode="create", use_multipart=False)
        except (X.AlreadyExistsError, X.PreconditionError):
            return False
        except Exception as e:
            raise self._error("writing", name, e) from None
        return True

    def get(self, name) -> bytes | None:
        import obstore

        try:
            return bytes(obstore.get(self._store, check_name(name)).bytes())
        except FileNotFoundError:
            return None
        except Exception as e:
            raise self._error("reading", name, e) from None

    def get_range(self, name, start, end) -> bytes:
        import obstore

        if end <= start:
            return b""
        try:
            return bytes(obstore.get_range(self._store, check_name(name), start=start, end=end))
        except FileNotFoundError:
            raise BackendError(f"{self.url}: reading {name}: no such object") from None
        except Exception as e:
            m = _STATUS.search(str(e))
            if m and m.group(1) == "416":  # all of it past the end: a short object
                return b""
            raise self._error("reading", name, e) from None

    def stat(self, name) -> ObjectInfo | None:
        import obstore

        try:
            meta = obstore.head(self._store, check_name(name))
        except FileNotFoundError:
            return None
        except Exception as e:
            raise self._error("stat of", name, e) from None
        return ObjectInfo(name, meta["size"], _mtime(meta))

    def list(self, prefix="", start_after=None) -> Iterator[ObjectInfo]:
        import obstore

        try:
            for chunk in obstore.list(
                self._store, prefix.rstrip("/") or None, offset=start_after, chunk_size=1000
            ):
                for meta in chunk:
                    yield ObjectInfo(meta["path"], meta["size"], _mtime(meta))
        except FileNotFoundError:
            return
        except Exception as e:
            raise self._error("listing", prefix or "/", e) from None

    def delete(self, name) -> None:
        import obstore

        try:
            obstore.delete(self._store, check_name(name))
        except FileNotFoundError:
            pass
        except Exception as e:
            raise self._error("deleting", name, e) from None

    def close(self) -> None:
        # the client's connection pool goes with its last reference
        self._store = None


def _mtime(meta) -> float | None:
    """The object's last-modified time, as obstore reports it (a datetime)."""
    t = meta.get("last_modified")
    try:
        return t.timestamp() if t is not None else None
    except (AttributeError, ValueError, OverflowError):
        return None
