"""Security: keys, authentication and transport encryption for vtstore's servers.

- `vtstore.security.keys`: shared keys (an id, 32 random octets and rights per
  export), the key files that hold them (0600, refused when others can read
  them) and the server's list of authorized keys;
- `vtstore.security.auth`: the challenge-response of the block protocol's
  handshake (HMAC-SHA256 over both nonces; docs/PROTOCOL.md §2a);
- `vtstore.security.tls`: TLS contexts from the standard library, certificate
  pinning, and a TLS transport that lets one thread read while another writes.
"""
