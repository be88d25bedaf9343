"""The block protocol, its server and its client store (DESIGN.md §6).

- `vtstore.net.protocol`: packet framing, op and error codes, payload codecs
  (specified octet by octet in docs/PROTOCOL.md);
- `vtstore.net.server`: `BlockServer`, serving named stores over TCP, UNIX sockets
  and stdin/stdout to many clients; `vtstore.net.handlers`: what each request does;
- `vtstore.net.client`: `StreamStore`, the client store for `tcp:host:port`,
  `unix:/path.sock` and `|command` specs, with pipelined adds and reconnection;
  `vtstore.net.link`: one client connection;
- `vtstore.net.transport`: the byte streams both run over;
- `vtstore.net.indirect`: "is every block under this one present?";
- `vtstore.net.specs`: the `tcp:`, `unix:` and `|command` store specs, registered
  with `vtstore.stores.spec` when this package is imported.
"""

from vtstore.net.client import RemoteArchive, StreamStore, open_stream_store


def __getattr__(name: str):
    # the server (and its auth, limits, ctypes) only for those who serve:
    # a client command starts faster without it
    if name == "BlockServer":
        from vtstore.net.server import BlockServer

        return BlockServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register_specs() -> None:
    from vtstore.net.specs import register

    try:
        register()
    except ImportError:  # no store-spec layer: the client store still works directly
        pass


_register_specs()

__all__ = ["BlockServer", "RemoteArchive", "StreamStore", "open_stream_store"]
