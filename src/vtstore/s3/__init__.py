"""Stores on S3-compatible object stores: `s3://BUCKET/PREFIX` (packs) and
`s3+blocks://BUCKET/PREFIX` (one object per block).

Importing this package registers the `s3` store type over the reserved one of
`vtstore.stores.spec` (which names this package in `PROVIDERS`), and the
`s3+blocks://` scheme.  A clause::

    [offsite]
    type = s3
    url = s3://backups/vt          (or bucket = backups, prefix = vt)
    endpoint = http://127.0.0.1:8333   (none: AWS; else $AWS_ENDPOINT_URL)
    region = us-east-1
    layout = packs                 (or blocks; an existing store keeps its own)
    cache = ~/.cache/vt/s3/offsite (the local index and spool of the pack layout)
    uploads = 4                    (packs uploaded at once)
    downloads = 8                  (ranged GETs at once for a batch of reads)
    pack_size = 32MiB
    spool = disk                   (or memory: packs built in RAM, no disk writes)
    parallel = 32                  (requests at once, blocks layout)
    retry_time = 60                (seconds of retries before giving up)
    sign_payload = auto            (yes: uploads sign their SHA-256 always; auto: not
                                    over https:// or loopback, where it protects nothing)
    profile = NAME                 (of ~/.aws/credentials; else $AWS_PROFILE)

Credentials: `access_key_id`/`secret_access_key` keys, else the AWS
environment variables, else `~/.aws/credentials` (`vtstore.stores.backends.s3`).
docs/STORES.md explains the layouts and the consistency model.
"""

from __future__ import annotations

import hashlib
import os

from vtstore.errors import ConfigError
from vtstore.stores import spec as S
from vtstore.stores.backends.base import Retrying
from vtstore.stores.backends.layout import read_config
from vtstore.stores.backends.packs import DEFAULT_PACK_SIZE, DEFAULT_READAHEAD, DEFAULT_UPLOADS

LAYOUTS = ("packs", "blocks")


def parse_s3_url(text: str) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` (or `BUCKET/PREFIX`) -> `(BUCKET, PREFIX)`."""
    t = str(text).strip()
    for scheme in ("s3+blocks://", "s3://"):
        if t.startswith(scheme):
            t = t[len(scheme) :]
            break
    bucket, _, prefix = t.partition("/")
    if not bucket or not all(c.isalnum() or c in ".-_" for c in bucket):
        raise ValueError(f"say s3://BUCKET/PREFIX, not {text!r}")
    return bucket, prefix.strip("/")


def _layout(text: str) -> str:
    t = str(text).strip().lower()
    if t not in LAYOUTS:
        raise ValueError(f"layout is packs or blocks, not {text!r}")
    return t


def _spool(text: str) -> str:
    t = str(text).strip().lower()
    if t not in ("disk", "memory"):
        raise ValueError(f"spool is disk or memory, not {text!r}")
    return t


def _sign(text: str) -> str:
    t = str(text).strip().lower()
    t = {"true": "yes", "false": "no", "1": "yes", "0": "no"}.get(t, t)
    if t not in ("auto", "yes", "no"):
        raise ValueError(f"sign_payload is auto, yes or no, not {text!r}")
    return t


def _seconds(text: str) -> float:
    t = float(text)
    if not 0 < t < 1e7:
        raise ValueError(f"a time in seconds must be above 0, got {text!r}")
    return t


def _count(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 1024:
        raise ValueError(f"a count of 1..1024, got {text!r}")
    return n


def default_cache_dir(endpoint: str | None, bucket: str, prefix: str) -> str:
    """Where the pack layout keeps its local index and spool by default:
    `$XDG_CACHE_HOME/vt/s3/BUCKET-HASH` (else under `~/.cache`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    key = hashlib.sha256(f"{endpoint or 'aws'}|{bucket}|{prefix}".encode()).hexdigest()[:16]
    return os.path.join(base, "vt", "s3", f"{bucket}-{key}")


def open_s3(spec: S.StoreSpec, ctx: S.OpenContext):
    """Open an `s3` spec or clause: the layout the bucket holds, else the one asked."""
    from vtstore.stores.backends.objects import BlockObjectStore
    from vtstore.stores.backends.packs import PackStore
    from vtstore.stores.backends.s3 import S3Backend

    p = spec.params
    if "url" in p:
        try:
            bucket, prefix = parse_s3_url(p["url"])
        except ValueError as e:
            raise ConfigError(f"{spec}: {e}") from None
    elif "bucket" in p:
        bucket, prefix = p["bucket"], p.get("prefix", "")
    else:
        raise ConfigError(f"{spec}: an s3 store needs url or bucket")
    if "prefix" in p and "url" in p:
        prefix = p["prefix"].strip("/")
    endpoint = p.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL")
    backend = Retrying(
        S3Backend(
            bucket,
            prefix,
            endpoint=endpoint,
            region=p.get("region"),
            access_key_id=p.get("access_key_id"),
            secret_access_key=p.get("secret_access_key"),
            profile=p.get("profile"),
            timeout=p.get("timeout", 120.0),
            sign_payload=p.get("sign_payload", "auto"),
        ),
        max_time=p.get("retry_time", 60.0),
    )
    try:
        config = read_config(backend)
        layout = (config or {}).get("layout") or p.get("layout", "packs")
        if config is not None and p.get("layout") not in (None, layout):
            raise ConfigError(f"{backend.url} holds a {layout} store, not {p['layout']}")
        common = {
            "hashclass": S._hashclass(spec, ctx),
            "default_hashclass": ctx.default_hashclass,
            "readonly": S._flag(spec, ctx),
            "name": spec.text or backend.url,
            "config": config,
        }
        if layout == "blocks":
            return BlockObjectStore(backend, parallel=p.get("parallel", 32), **common)
        cache = p.get("cache") or default_cache_dir(endpoint, bucket, prefix)
        kw = {
            k: p[k]
            for k in ("frame_size", "zstd_level", "compress", "spool", "downloads")
            if k in p
        }
        return PackStore(
            backend,
            os.path.expanduser(cache),
            pack_size=p.get("pack_size", DEFAULT_PACK_SIZE),
            uploads=p.get("uploads", DEFAULT_UPLOADS),
            readahead=p.get("readahead", DEFAULT_READAHEAD),
            **kw,
            **common,
        )
    except BaseException:
        backend.close()
        raise


S3_KEYS = {
    "url": S._str,
    "bucket": S._str,
    "prefix": str,
    "endpoint": S._str,
    "region": S._str,
    "layout": _layout,
    "spool": _spool,
    "cache": S._str,
    "uploads": _count,
    "downloads": _count,
    "parallel": _count,
    "pack_size": S.parse_size,
    "readahead": S.parse_size,
    "frame_size": S.parse_size,
    "zstd_level": S.parse_zstd_level,
    "compress": S.parse_bool,
    "retry_time": _seconds,
    "timeout": _seconds,
    "sign_payload": _sign,
    "profile": S._str,
    "access_key_id": S._str,
    "secret_access_key": S._str,
}


def _url_params(layout: str):
    def parse(rest: str) -> dict:
        parse_s3_url(rest)
        out = {"url": "s3://" + S._str(rest)}
        if layout != "packs":
            out["layout"] = layout
        return out

    return parse


def register() -> None:
    """Register the `s3` store type and the `s3://`, `s3+blocks://` schemes."""
    S.register_store_type("s3", open_s3, S3_KEYS, "an S3 bucket (packs or one object per block)")
    S.register_scheme("s3://", "s3", _url_params("packs"))
    S.register_scheme("s3+blocks://", "s3", _url_params("blocks"))


register()
