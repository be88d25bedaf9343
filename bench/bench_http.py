"""HTTP benchmark: `vt httpd` and the HTTP client store against `vt serve` on a
UNIX socket and Debian's nginx serving the same bytes as static files.

    .venv/bin/python bench/bench_http.py [--size 1GiB] [--files 30000] [--json OUT]
        [--rounds 3] [--baseline SRC] [--large-only]

Measures, in one run on this machine:

1. a large file, `--rounds` times interleaved (medians): `vt -S http://... cat
   REF` and `vt -S unix:... cat REF` to /dev/null; `curl` of the file from vt
   httpd (`/i/BLOCK` and `/d/REF`) and from nginx, the same client for both;
   the CPU seconds vt httpd, nginx, curl and the vt client spent (this machine is shared:
   CPU per GB holds better than MB/s); with `--baseline SRC` also a vt httpd
   and vt client run from another source tree, before/after in one run;
2. a tree of `--files` small files: `vt -S http://... unpack` and
   `vt -S unix:... unpack`; nginx: the same files fetched by the same
   keep-alive load client;
3. small-block GETs per second with keep-alive (`/h/HASH`, 8 connections,
   an asyncio load client), beside nginx serving small static files, and the
   same route written with Starlette (why vt httpd is a hand-written ASGI app).

Goals (issue 17): a large file at >= 50% of nginx; >= 5,000 small-block GETs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def vt(*args, stdout=subprocess.DEVNULL, env=None, check=True):
    r = subprocess.run([PY, "-m", "vtstore.cli.main", "-q", *args], stdout=stdout, env=env)
    if check and r.returncode:
        raise SystemExit(f"vt {' '.join(args[:4])}... failed ({r.returncode})")
    return r


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_file(path: Path, proc, timeout=60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.02)
    return path.read_text().strip()


# -- a keep-alive load client ---------------------------------------------------------


async def _worker(host, port, paths, deadline, counts):
    reader, writer = await asyncio.open_connection(host, port)
    i = random.randrange(len(paths))
    n = 0
    try:
        while time.perf_counter() < deadline:
            p = paths[i % len(paths)]
            i += 1
            writer.write(f"GET {p} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if status != b"200":
                raise SystemExit(f"GET {p}: {status.decode()}")
            n += 1
    finally:
        writer.close()
    counts.append(n)


def load(host: str, port: int, paths: list[str], conns: int = 8, seconds: float = 5.0) -> float:
    """Requests per second over `conns` keep-alive connections."""

    async def main():
        counts: list[int] = []
        deadline = time.perf_counter() + seconds
        t = time.perf_counter()
        await asyncio.gather(*(_worker(host, port, paths, deadline, counts) for _ in range(conns)))
        return sum(counts) / (time.perf_counter() - t)

    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:
        return asyncio.run(main())


def curl_rate(base: str, paths: list[str], conns: int = 8, n: int = 20000) -> float:
    """Requests per second with curl (a C client) over `conns` parallel
    keep-alive connections, `n` requests: the load client costs less of the
    2 cores than the Python one."""
    cfg = tempfile.NamedTemporaryFile("w", suffix=".curl", delete=False)
    with cfg:
        for i in range(n):
            cfg.write(f'url = "{base}{paths[i % len(paths)]}"\noutput = "/dev/null"\n')
    try:
        t = time.perf_counter()
        subprocess.run(
            [
                "curl",
                "-s",
                "--no-progress-meter",
                "--fail",
                "--parallel",
                "--parallel-max",
                str(conns),
                "-K",
                cfg.name,
            ],
            check=True,
        )
        return n / (time.perf_counter() - t)
    finally:
        os.unlink(cfg.name)


# -- servers --------------------------------------------------------------------------


def src_env(src: str | None) -> dict | None:
    """The environment that runs vt from the source tree `src` (None: this one)."""
    if src is None:
        return None
    return dict(os.environ, PYTHONPATH=str(Path(src).resolve()))


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Servers:
    def __init__(self, tmp: Path, dd: Path, www: Path, baseline: str | None = None):
        self.tmp, self.procs = tmp, []
        self.http_proc, self.http = self._httpd(dd, "httpd", None)
        self.base_proc = self.base_http = None
        if baseline:
            self.base_proc, self.base_http = self._httpd(dd, "httpd-base", baseline)
        sock = tmp / "vt.sock"
        ready = tmp / "serve.ready"
        p = subprocess.Popen(
            [PY, "-m", "vtstore.cli.main", "-q", "-S", str(dd), "serve", str(sock)]
            + ["--ready-file", str(ready)]
        )
        self.procs.append(p)
        self.unix = wait_file(ready, p)
        self.nginx_port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(
            f"worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;\n"
            f" client_body_temp_path {tmp}/nb; proxy_temp_path {tmp}/np;"
            f" fastcgi_temp_path {tmp}/nf; uwsgi_temp_path {tmp}/nu; scgi_temp_path {tmp}/ns;\n"
            f" server {{ listen 127.0.0.1:{self.nginx_port}; root {www}; }} }}\n"
        )
        p = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp)])
        self.procs.append(p)
        for _ in range(500):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.nginx_port)) == 0:
                    break
            time.sleep(0.02)

    def nginx_worker(self) -> int:
        """The pid of nginx's one worker process (it does the serving)."""
        master = self.procs[-1].pid
        kids = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return int(kids[0]) if kids else master

    def _httpd(self, dd: Path, name: str, src: str | None):
        ready = self.tmp / f"{name}.ready"
        p = subprocess.Popen(
            [PY, "-m", "vtstore.cli.main", "-q", "-S", str(dd), "httpd", "127.0.0.1:0"]
            + ["--insecure-no-auth", "--ready-file", str(ready)],
            env=src_env(src),
        )
        self.procs.append(p)
        return p, wait_file(ready, p)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def starlette_rate(store_path: Path, paths: list[str], seconds: float) -> float:
    """The /h/ route written with Starlette, same store and server settings."""
    code = f"""
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from vtstore.hashes import parse_hashcode
from vtstore.stores.datadir import DataDir
store = DataDir({str(store_path)!r}, readonly=True)
async def block(request):
    h = parse_hashcode(request.path_params["h"])
    data = store.get(h)
    if data is None:
        return Response(status_code=404)
    etag = '"' + str(h) + '"'
    return Response(data, media_type="application/octet-stream",
        headers={{"etag": etag, "cache-control": "public, max-age=31536000, immutable"}})
app = Starlette(routes=[Route("/h/{{h}}", block)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
    log_level="warning", access_log=False, lifespan="off")
"""
    port = free_port()
    p = subprocess.Popen([PY, "-c", code, str(port)])
    try:
        for _ in range(500):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        return load("127.0.0.1", port, paths, seconds=seconds)
    finally:
        p.terminate()
        p.wait(30)


# -- the run --------------------------------------------------------------------------


def main() -> int:
    from vtstore.stores.spec import parse_size

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB", help="the large file (default 1GiB)")
    ap.add_argument("--files", type=int, default=30000, help="small files in the tree")
    ap.add_argument("--seconds", type=float, default=5.0, help="each load test")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument(
        "--rounds", type=int, default=3, help="large-file rounds, interleaved (medians; default 3)"
    )
    ap.add_argument(
        "--baseline",
        metavar="SRC",
        help="also a vt httpd and vt client from the source tree SRC (before/after in one run)",
    )
    ap.add_argument(
        "--large-only", action="store_true", help="only the large file (no tree, no small GETs)"
    )
    args = ap.parse_args()
    size = parse_size(args.size)
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    tmp.chmod(0o755)  # nginx workers run as another user
    res: dict = {"size": size, "files": args.files, "cores": os.cpu_count()}
    try:
        dd, www = tmp / "dd", tmp / "www"
        (www / "tree").mkdir(parents=True)
        big = www / "big.bin"
        with open(big, "wb") as f:
            for _ in range(size >> 24):
                f.write(os.urandom(1 << 24))
            f.write(os.urandom(size & ((1 << 24) - 1)))
        rnd = random.Random(1)
        if args.large_only:
            args.files = 0
        for i in range(args.files):
            sub = www / "tree" / f"d{i // 500:03d}"
            sub.mkdir(exist_ok=True)
            (sub / f"f{i:05d}.txt").write_bytes(rnd.randbytes(rnd.randrange(200, 4000)))
        r = vt("-S", str(dd), "save", "-F", str(big), stdout=subprocess.PIPE)
        big_ref = r.stdout.decode().strip().splitlines()[-1]
        tree_ref = None
        if args.files:
            r = vt("-S", str(dd), "save", "-F", str(www / "tree"), stdout=subprocess.PIPE)
            tree_ref = r.stdout.decode().strip().splitlines()[-1]
        srv = Servers(tmp, dd, www, args.baseline)
        try:
            res["http"], res["unix"], res["nginx_port"] = srv.http, srv.unix, srv.nginx_port
            from urllib.parse import quote

            import vtstore.tree.dirent  # noqa: F401 - registers the dirent forms
            from vtstore.transcribe import parse

            dirent, _ = parse(big_ref)
            # 1. a large file (the datadir read in-process: what any server of it can reach)
            res["load_before"] = os.getloadavg()[0]
            from vtstore.transcribe import transcribe

            blk = quote(transcribe(dirent.block), safe="")
            large = large_file_rounds(srv, dd, big_ref, blk, size, args.rounds, args.baseline)
            res["large_rounds"] = large
            for k, v in large.items():
                res[k] = statistics.median(v)
            if args.large_only:
                return finish(res, args, size)
            # 2. a tree of small files
            for name, spec in (("unpack_http", srv.http), ("unpack_unix", srv.unix)):
                out = tmp / name
                res[name] = timed(lambda s=spec, o=out: vt("-S", s, "unpack", tree_ref, str(o)))
                shutil.rmtree(out)
            files = sorted(str(p.relative_to(www)) for p in (www / "tree").rglob("*.txt"))
            rate = load("127.0.0.1", srv.nginx_port, ["/" + f for f in files], seconds=args.seconds)
            res["nginx_tree_seconds"] = len(files) / rate
            # 3. small-block GETs
            from vtstore.stores.datadir import DataDir

            with DataDir(dd, readonly=True) as store:
                leaves = [b.hashcode for b in dirent.block.leaves(store)][:20000]
            paths = [f"/h/{h}" for h in leaves]
            host = srv.http.split("//")[1].split("/")[0]
            h, p = host.rsplit(":", 1)
            res["gets_httpd"] = load(h, int(p), paths, seconds=args.seconds)
            res["gets_nginx_small_files"] = rate
            nginx = f"http://127.0.0.1:{srv.nginx_port}"
            res["curl_gets_httpd"] = curl_rate(srv.http.rstrip("/"), paths)
            res["curl_gets_nginx"] = curl_rate(nginx, ["/" + f for f in files])
        finally:
            srv.stop()
        res["gets_starlette"] = starlette_rate(dd, paths, args.seconds)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return finish(res, args, size)


def finish(res: dict, args, size: int) -> int:
    """Print the table (and write the JSON) of what was measured."""
    mb = size / 1e6
    res["load_after"] = os.getloadavg()[0]
    nginx = res["curl_nginx"]
    rows = [
        ("vt -S DATADIR cat, local (MB/s)", res["cat_local"], res["cat_local"] / nginx),
        ("vt -S http:// cat (MB/s)", res["cat_http"], res["cat_http"] / nginx),
        ("vt -S unix: cat (MB/s)", res["cat_unix"], res["cat_unix"] / nginx),
        ("curl vt httpd /i/ (MB/s)", res["curl_httpd"], res["curl_httpd"] / nginx),
        ("curl vt httpd /d/REF/file (MB/s)", res["curl_httpd_d"], res["curl_httpd_d"] / nginx),
        ("curl nginx static (MB/s)", nginx, 1.0),
        ("  vt httpd CPU per GB, /i/ (s)", res["cpu_httpd"] / mb * 1000, None),
        ("  vt httpd CPU per GB, http cat (s)", res["cpu_httpd_cat"] / mb * 1000, None),
        ("  vt client CPU per GB, http cat (s)", res["cpu_client_cat_http"] / mb * 1000, None),
        ("  nginx CPU per GB (s)", res["cpu_nginx"] / mb * 1000, None),
        ("  curl CPU per GB from vt httpd (s)", res["cpu_curl_httpd"] / mb * 1000, None),
        ("  curl CPU per GB from nginx (s)", res["cpu_curl_nginx"] / mb * 1000, None),
    ]
    if "curl_base" in res:
        rows += [
            ("baseline: curl vt httpd /i/ (MB/s)", res["curl_base"], res["curl_base"] / nginx),
            ("baseline: vt -S http:// cat (MB/s)", res["cat_base"], res["cat_base"] / nginx),
            ("  baseline httpd CPU per GB, /i/ (s)", res["cpu_base"] / mb * 1000, None),
            ("  baseline httpd CPU per GB, cat (s)", res["cpu_base_cat"] / mb * 1000, None),
            (
                "  baseline client CPU per GB, cat (s)",
                res["cpu_client_cat_base"] / mb * 1000,
                None,
            ),
        ]
    if not args.large_only:
        rate = res["gets_nginx_small_files"]
        rows += [
            (
                "vt -S http:// unpack (s)",
                res["unpack_http"],
                res["unpack_http"] / res["unpack_unix"],
            ),
            ("vt -S unix: unpack (s)", res["unpack_unix"], 1.0),
            ("nginx same files, 8 conns (s)", res["nginx_tree_seconds"], None),
            ("small-block GETs/s vt httpd", res["gets_httpd"], res["gets_httpd"] / rate),
            ("small-block GETs/s Starlette", res["gets_starlette"], res["gets_starlette"] / rate),
            ("small static GETs/s nginx", rate, 1.0),
            (
                "curl: small-block GETs/s vt httpd",
                res["curl_gets_httpd"],
                res["curl_gets_httpd"] / res["curl_gets_nginx"],
            ),
            ("curl: small static GETs/s nginx", res["curl_gets_nginx"], 1.0),
        ]
    print(
        f"large file {mb:.0f} MB ({args.rounds} rounds, medians), tree of {args.files} files,"
        f" {os.cpu_count()} cores, load average {res['load_before']:.1f} before,"
        f" {res['load_after']:.1f} after"
    )
    print(f"{'measure':38} {'value':>10}  ratio to nginx")
    for name, v, ratio in rows:
        print(f"{name:38} {v:10.2f}  {'' if ratio is None else f'{ratio:.2f}'}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def large_file_rounds(srv, dd, ref: str, blk: str, size: int, rounds: int, baseline) -> dict:
    """The large-file measures, `rounds` times each, interleaved (so that a
    change in the machine's load falls on all of them alike): MB/s, and the
    CPU seconds the server and the client spent."""
    from urllib.parse import quote

    import vtstore.tree.dirent  # noqa: F401 - registers the dirent forms
    from vtstore.transcribe import parse

    dirent, _ = parse(ref)
    nginx_pid = srv.nginx_worker()
    base_env = src_env(baseline)
    out: dict = {}

    def add(key, value):
        out.setdefault(key, []).append(value)

    def curl(url):
        c0 = children_cpu()
        t = timed(
            lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", "--fail", url], check=True)
        )
        return size / t / 1e6, children_cpu() - c0

    def server(proc, key, fn):
        c0 = proc_cpu(proc.pid)
        fn()
        add(key, proc_cpu(proc.pid) - c0)

    for _ in range(rounds):
        add("cat_local", size / timed(lambda: vt("-S", str(dd), "cat", ref)) / 1e6)
        c0 = proc_cpu(nginx_pid)
        rate, cpu = curl(f"http://127.0.0.1:{srv.nginx_port}/big.bin")
        add("curl_nginx", rate)
        add("cpu_curl_nginx", cpu)
        add("cpu_nginx", proc_cpu(nginx_pid) - c0)

        def httpd_curl(url=srv.http):
            rate, cpu = curl(url + "i/" + blk)
            add("curl_httpd", rate)
            add("cpu_curl_httpd", cpu)

        server(srv.http_proc, "cpu_httpd", httpd_curl)
        add("curl_httpd_d", curl(srv.http + "d/" + quote(ref, safe=""))[0])

        def http_cat(url=srv.http, env=None, key="cat_http"):
            c0 = children_cpu()
            add(key, size / timed(lambda: vt("-S", url, "cat", ref, env=env)) / 1e6)
            add("cpu_client_" + key, children_cpu() - c0)

        server(srv.http_proc, "cpu_httpd_cat", http_cat)
        add("cat_unix", size / timed(lambda: vt("-S", srv.unix, "cat", ref)) / 1e6)
        if baseline:
            server(
                srv.base_proc,
                "cpu_base",
                lambda: add("curl_base", curl(srv.base_http + "i/" + blk)[0]),
            )
            server(
                srv.base_proc,
                "cpu_base_cat",
                lambda: http_cat(srv.base_http, base_env, "cat_base"),
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
