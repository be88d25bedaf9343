"""`vt umount`: unmount a vt mount and wait until its final state is recorded."""

from __future__ import annotations

import errno
import os
import time

from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "umount",
        help="unmount a vt mount",
        description=(
            "Unmount MOUNTPOINT and wait for the mount process to record its final"
            " state and exit.  -l detaches a busy mount lazily.  A mount whose"
            " process died ('transport endpoint is not connected') is detached too"
            " (lazily if it is still in use), so the directory is usable again."
        ),
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("-l", "--lazy", action="store_true", help="lazy unmount of a busy mount")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS")
    p.set_defaults(func=run)


def mount_pid(mountpoint: str) -> int | None:
    """The pid of the process serving a vt mount, or None."""
    try:
        return int(os.getxattr(mountpoint, "x-vt-pid"))
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours has finished
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Detach the FUSE mount at `mountpoint` (fusermount3, else umount)."""
    import shutil
    import subprocess

    tools = []
    if shutil.which("fusermount3"):
        tools.append(["fusermount3", "-u"] + (["-z"] if lazy else []))
    if shutil.which("fusermount"):
        tools.append(["fusermount", "-u"] + (["-z"] if lazy else []))
    tools.append(["umount"] + (["-l"] if lazy else []))
    err = ""
    for cmd in tools:
        r = subprocess.run([*cmd, mountpoint], capture_output=True, text=True)
        if r.returncode == 0:
            return
        err = (r.stderr or r.stdout).strip()
    raise VTError(f"{mountpoint}: cannot unmount: {err}")


def dead_mount(path: str) -> bool:
    """Whether `path` is a mount whose FUSE process died (ENOTCONN on stat)."""
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def run(args) -> int:
    mnt = os.path.abspath(args.mountpoint)
    if dead_mount(mnt):
        # nobody will record anything: just detach it, lazily if something holds it
        try:
            unmount(mnt, args.lazy)
        except VTError:
            unmount(mnt, lazy=True)
        return 0
    if not os.path.ismount(mnt):
        raise VTError(f"{mnt}: not a mount point")
    pid = mount_pid(mnt)
    unmount(mnt, args.lazy)
    if pid is None or pid == os.getpid():
        return 0
    deadline = time.monotonic() + args.timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise VTError(f"the mount process {pid} is still recording its state")
        time.sleep(0.05)
    return 0
