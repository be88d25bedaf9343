"""TLS for the block protocol, from the standard library's `ssl`.

`server_context(cert, key)` and `client_context(ca=..., pin=...)` make the
contexts; `TLSEngine` runs one TLS connection over a plain socket through
memory BIOs.  Why not `ssl.SSLSocket`: the block protocol reads on one thread
while another writes, and an OpenSSL connection must not be used by two threads
at once.  The engine keeps the TLS state under a lock that is never held across
a blocking system call, so the reader may wait for data while the writer sends.

Pinning: a client given `pin` (the SHA-256 of the server certificate's DER
octets, hex, as `vt key tls-cert` prints it) accepts exactly that certificate,
self-signed or not, and nothing else; given `ca` (a PEM file, e.g. the server's
own self-signed certificate), it verifies the chain and the host name as usual.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import socket
import ssl
import threading

from vtstore.errors import ConfigError

#: Octets asked of the socket per receive.
RECV_SIZE = 256 * 1024


class TLSError(ConfigError):
    """A TLS setting that cannot be used (a missing or bad certificate, key or pin)."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the certificate chain `cert` and private key `key` (PEM)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(os.path.expanduser(cert), os.path.expanduser(key))
    except FileNotFoundError as e:
        raise TLSError(f"--tls-cert/--tls-key: {e.filename}: no such file") from None
    except (ssl.SSLError, OSError) as e:
        raise TLSError(f"cannot use the TLS certificate {cert} with key {key}: {e}") from None
    return ctx


def normalize_pin(pin: str) -> str:
    """`sha256:AB:CD...` or plain hex -> 64 lowercase hex digits."""
    text = str(pin).strip().lower()
    if text.startswith("sha256:"):
        text = text[7:]
    text = text.replace(":", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise TLSError(f"a TLS pin is the SHA-256 of the certificate: 64 hex digits, not {pin!r}")
    return text


def client_context(ca: str | None = None, pin: str | None = None) -> ssl.SSLContext:
    """A client context: verify against `ca` (a PEM file) or the system's CAs,
    or with `pin`, accept the one certificate of that fingerprint (checked by
    `TLSEngine` after the handshake)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if pin is not None:
        normalize_pin(pin)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the pin is the whole check
        return ctx
    try:
        if ca is not None:
            ctx.load_verify_locations(os.path.expanduser(ca))
        else:
            ctx.load_default_certs()
    except FileNotFoundError:
        raise TLSError(f"tls_ca: {ca}: no such file") from None
    except (ssl.SSLError, OSError) as e:
        raise TLSError(f"tls_ca: cannot load {ca}: {e}") from None
    return ctx


def fingerprint(der: bytes) -> str:
    """The pin of a certificate: SHA-256 of its DER octets, 64 hex digits."""
    return hashlib.sha256(der).hexdigest()


def cert_fingerprint(path: str) -> str:
    """The pin of the (first) certificate in a PEM file."""
    with open(os.path.expanduser(path)) as f:
        pem = f.read()
    try:
        return fingerprint(ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE") :]))
    except ValueError:
        raise TLSError(f"{path}: no PEM certificate in it") from None


def make_self_signed(cert_path: str, key_path: str, hosts=("127.0.0.1", "localhost"), days=3650):
    """Write a self-signed certificate for `hosts` (IP addresses or DNS names) and
    its private key (mode 0600); return its pin.  Uses `cryptography`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    alt = []
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    from vtstore.security.keys import write_private

    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
    )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


class TLSEngine:
    """One TLS connection over a connected socket, usable by one reading thread
    and one (or more) writing threads at once; see the module docstring."""

    def __init__(
        self,
        sock: socket.socket,
        ctx: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        pin: str | None = None,
    ):
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self.pin = normalize_pin(pin) if pin is not None else None
        self.lock = threading.Lock()  # the SSL object and its BIOs; never held in a syscall
        self.send_lock = threading.Lock()  # orders what leaves the out BIO
        self._hs_lock = threading.Lock()
        self.handshaken = False
        self._rbuf = bytearray(RECV_SIZE)  # raw octets, reused for every receive
        self._rview = memoryview(self._rbuf)

    def handshake(self) -> None:
        """Run the TLS handshake (once; later calls return at once)."""
        if self.handshaken:
            return
        with self._hs_lock:
            if self.handshaken:
                return
            while True:
                with self.lock:
                    try:
                        self.obj.do_handshake()
                        done = True
                    except ssl.SSLWantReadError:
                        done = False
                    out = self._out.read()
                if out:
                    with self.send_lock:
                        self.sock.sendall(out)
                if done:
                    break
                data = self.sock.recv(RECV_SIZE)
                with self.lock:
                    if data:
                        self._in.write(data)
                    else:
                        raise ConnectionError("the peer closed the connection during TLS setup")
            if self.pin is not None:
                der = self.obj.getpeercert(binary_form=True) or b""
                if not hmac.compare_digest(fingerprint(der), self.pin):
                    raise ssl.SSLCertVerificationError(
                        1,
                        f"the server's certificate is not the pinned one"
                        f" (its pin is sha256:{fingerprint(der)})",
                    )
            self.handshaken = True

    def _drain(self, blocking: bool) -> None:
        """Send what the TLS state has produced, in the order it produced it."""
        if not self.send_lock.acquire(blocking):
            return  # the sender holding it sends it with its own, in order
        try:
            with self.lock:
                out = self._out.read()
            if out:
                self.sock.sendall(out)
        finally:
            self.send_lock.release()

    def readinto(self, buf) -> int:
        """Read decrypted octets into `buf` (as many records as are here, so a
        large read costs few calls); 0 at the end of the stream."""
        self.handshake()
        mv = memoryview(buf).cast("B")
        size = len(mv)
        while True:
            got = 0
            eof = False
            with self.lock:
                while got < size:
                    try:
                        n = self.obj.read(size - got, mv[got:])
                    except ssl.SSLWantReadError:
                        break
                    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                        eof = True
                        break
                    if not n:
                        eof = True
                        break
                    got += n
                pending = self._out.pending
            if pending:
                self._drain(blocking=False)
            if got or eof:
                return got
            n = self.sock.recv_into(self._rbuf)
            with self.lock:
                if n:
                    self._in.write(self._rview[:n])
                else:
                    self._in.write_eof()

    def send(self, data) -> None:
        """Encrypt and send all of `data`."""
        self.handshake()
        with self.send_lock:
            with self.lock:
                self.obj.write(data)
                out = self._out.read()
            self.sock.sendall(out)


class _TLSRaw(io.RawIOBase):
    """The decrypted stream of a `TLSEngine`, for an `io.BufferedReader`."""

    def __init__(self, engine: TLSEngine):
        self.engine = engine

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self.engine.readinto(b)


def tls_reader(engine: TLSEngine, size: int) -> io.BufferedReader:
    """A buffered reader of `engine`'s decrypted octets."""
    return io.BufferedReader(_TLSRaw(engine), size)


class TLSListenSocket(socket.socket):
    """A listening socket whose accepted connections carry `tls_context`, so the
    server's transport runs TLS on them (the handshake happens on the
    connection's own thread, not in the accept loop)."""

    tls_context: ssl.SSLContext | None = None

    def accept(self):
        fd, addr = self._accept()
        sock = _AcceptedTLSSocket(self.family, self.type, self.proto, fileno=fd)
        sock.tls_server_context = self.tls_context
        if socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, addr


class _AcceptedTLSSocket(socket.socket):
    """An accepted socket on which the server must run TLS."""

    tls_server_context: ssl.SSLContext | None = None
