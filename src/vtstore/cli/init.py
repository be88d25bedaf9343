"""`vt init`: write a commented default config file (never over an existing one)
and create the default store's datadir."""

from __future__ import annotations

import os
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init", help="create the default configuration and datadir", description=__doc__
    )
    p.set_defaults(func=run)


def _write_config(path: Path) -> bool:
    from vtstore.config import DEFAULT_VTRC

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(DEFAULT_VTRC)
    return True


def run(args) -> int:
    from vtstore.config import default_config_path, load_config
    from vtstore.errors import ConfigError
    from vtstore.stores.spec import open_store_from_args

    path = Path(args.config_path).expanduser() if args.config_path else default_config_path()
    try:
        wrote = _write_config(path)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    print(f"{path}: {'written' if wrote else 'exists, left as it is'}")
    load_config(path)  # check it before using it
    args.config_path = str(path)
    with open_store_from_args(args) as store:
        create = getattr(store, "create", None)
        if callable(create):
            existed = store.initialized
            create()
            state = "exists" if existed else "created"
            print(f"{store.name}: datadir {state} ({store.hashclass.hashname})")
        else:
            print(f"{store.name}: nothing to create for this kind of store")
    return 0
