"""`vt ftp [X.vt | REF | MOUNTPOINT]`: an interactive shell over a tree.

The commands are the control API's (`vtstore.control.WorkTree`) plus the
expected shell ones (`ls -l`, `cd`, `pwd`, `lcd`, `!cmd`, `help CMD`).  Line
editing, history and completion come from the stdlib `cmd` and `readline`:
one-word commands and paths need nothing more, and no dependency is added.
Scripts come from `-c 'cmd; cmd'` or a stdin that is not a terminal; a script
stops at its first error without recording anything (exit 1).  `quit` (or
Ctrl-D, or the script's end) records a new state in the archive only if the
tree changed; without an archive it prints the new top dirent ref.
"""

from __future__ import annotations

import cmd
import os
import shlex
import subprocess
import sys

from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "ftp",
        help="interactive shell over a tree",
        description=(
            "Work on a tree interactively: cd, ls -l, inspect, get/put between the"
            " tree and local files, bind a name to a ref, clone, mkdir, rm, mv, link,"
            " splice, crop, pull/push subtrees from/to a peer store, merge, sync."
            " TARGET is an archive (X.vt, [clause]NAME, optionally /path inside it),"
            " a dirent ref or archive state (X.vt@SEL), or nothing (an empty tree)."
            " 'quit' records a new state in the archive if the tree changed, or"
            " prints the new top ref when there is no archive.  'help' lists the"
            " commands, 'help CMD' explains one."
        ),
    )
    p.add_argument("target", nargs="?", metavar="TARGET", help="X.vt, [clause]NAME, REF or nothing")
    p.add_argument(
        "-c",
        "--command",
        dest="script",
        metavar="SCRIPT",
        help="run the commands of SCRIPT (separated by ';' or newlines) and quit",
    )
    p.add_argument("-m", "--comment", help="the comment of the state recorded at quit")
    p.add_argument(
        "--create",
        action="store_true",
        help="start an archive that does not exist yet (its first state is recorded at quit)",
    )
    p.add_argument("--peer", metavar="STORE", help="the peer store for pull and push")
    p.add_argument(
        "--history",
        metavar="FILE",
        help="the history file (default: $XDG_STATE_HOME/vt/ftp_history, or ~/.local/state/...)",
    )
    p.set_defaults(func=run)


def history_path(args) -> str:
    if args.history:
        return args.history
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "vt", "ftp_history")


def split_script(text: str) -> list[str]:
    """The commands of a `-c` script: split at newlines and at `;` outside quotes."""
    out = []
    for line in text.splitlines():
        cur, quote = [], None
        for ch in line:
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == ";":
                out.append("".join(cur))
                cur = []
                continue
            cur.append(ch)
        out.append("".join(cur))
    return [c.strip() for c in out if c.strip()]


def open_tree(args, store):
    """The WorkTree `args.target` names in `store`."""
    from vtstore.cli.refs import archive_of, is_ref_text, resolve_special
    from vtstore.control import WorkTree

    def resolve(text, st):
        t = resolve_special(text, st)
        if t.dirent is None:
            raise VTError(f"{text}: a block, not a tree")
        return t.dirent

    text = args.target
    if not text:
        return WorkTree(store, resolve=resolve)

    if is_ref_text(text) or "@" in text:
        return WorkTree(store, resolve(text, store), resolve=resolve)
    archive, inner = archive_of(text, store)
    if not archive.exists() and not args.create:
        raise VTError(f"{text}: no such archive (--create starts one)")
    last = archive.last() if archive.exists() else None
    wt = WorkTree(store, last.dirent if last else None, archive=archive, resolve=resolve)
    if inner:
        wt.cd(inner)
    return wt


def run(args) -> int:
    from vtstore.cli.common import open_store
    from vtstore.cli.refs import use_clause_of
    from vtstore.control.live import LiveTree, is_live

    if args.target and is_live(args.target):
        return _session(LiveTree(args.target), args)  # the mount process has the store
    use_clause_of(args, args.target)
    with open_store(args) as store:
        return _session(open_tree(args, store), args)


def _session(wt, args) -> int:
    shell = FtpShell(wt, args)
    try:
        if args.peer and not shell.onecmd_checked(f"peer {shlex.quote(args.peer)}"):
            return 1
        if args.script is not None:
            ok = shell.run_script(split_script(args.script))
        elif not sys.stdin.isatty():
            ok = shell.run_script(split_script(sys.stdin.read()))
        else:
            ok = shell.interact(history_path(args))
        if not ok:
            print("vt ftp: script stopped at an error; nothing recorded", file=sys.stderr)
            return 1
        shell.finish()
    finally:
        wt.close_peer()
    return 0


#: what each command's arguments are, for completion: R remote path, L local path
ARG_KINDS = {
    "cd": "R",
    "ls": "R",
    "inspect": "R",
    "cat": "R",
    "get": "RL",
    "put": "LR",
    "bind": "R",
    "clone": "RR",
    "mkdir": "R",
    "rm": "R",
    "mv": "RR",
    "link": "RR",
    "splice": "R",
    "crop": "R",
    "push": "R",
    "lcd": "L",
    "lls": "L",
}
ALIASES = {"exit": "quit", "bye": "quit", "dir": "ls", "copy": "clone", "ln": "link"}


class ShellError(VTError):
    """A command used wrongly (its usage is in the message)."""

    exit_code = 2


def _flags(words: list[str], allowed: str) -> tuple[set[str], list[str]]:
    flags, rest = set(), []
    for w in words:
        if w.startswith("-") and len(w) > 1 and not rest:
            for ch in w[1:]:
                if ch not in allowed:
                    raise ShellError(f"unknown option -{ch}")
                flags.add(ch)
        else:
            rest.append(w)
    return flags, rest


def _nargs(words, lo: int, hi: int, usage: str) -> list[str]:
    if not lo <= len(words) <= hi:
        raise ShellError(f"usage: {usage}")
    return words


class FtpShell(cmd.Cmd):
    """The `vt ftp` command interpreter over a `WorkTree`."""

    def __init__(self, wt, args):
        super().__init__()
        self.wt = wt
        self.args = args
        self.quiet = getattr(args, "quiet", False)
        self.failed = False
        self.done = False
        self.prompt = "vt:/> "

    # -- running ----------------------------------------------------------

    def _set_prompt(self) -> None:
        self.prompt = f"vt:{self.wt.pwd()}> "

    def parseline(self, line):
        c, arg, line = super().parseline(line)
        if c:
            c = c.lower()
            c = ALIASES.get(c, c)
        return c, arg, line

    def emptyline(self):
        return False

    def default(self, line):
        raise ShellError(f"unknown command {line.split()[0]!r} (try 'help')")

    def onecmd_checked(self, line: str) -> bool:
        """Run one command; an error is one line on stderr.  Return whether it worked."""
        try:
            stop = self.onecmd(line)
        except KeyboardInterrupt:
            print("\nvt ftp: interrupted", file=sys.stderr)
            return False
        except (VTError, OSError, ValueError) as e:
            msg = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.strerror else e
            print(f"vt ftp: {msg}", file=sys.stderr)
            return False
        finally:
            self._set_prompt()
        if stop:
            self.done = True
        return True

    def run_script(self, lines: list[str]) -> bool:
        """Run `lines` in order; stop at the first error (False) or at quit."""
        for line in lines:
            if not self.onecmd_checked(line):
                return False
            if self.done:
                break
        return True

    def interact(self, history: str) -> bool:
        """The interactive loop with line editing, history and completion."""
        try:
            import readline
        except ImportError:  # pragma: no cover - CPython on Linux has it
            readline = None
        if readline is not None:
            readline.set_completer_delims(" \t\n;")
            readline.parse_and_bind("tab: complete")
            try:
                readline.read_history_file(history)
            except OSError:
                pass
            readline.set_history_length(1000)
            self.completekey = "tab"
            old = readline.get_completer()
            readline.set_completer(self.complete)
        try:
            while not self.done:
                try:
                    line = input(self.prompt)
                except EOFError:
                    print()
                    break
                except KeyboardInterrupt:
                    print("^C")
                    continue
                self.onecmd_checked(line)
        finally:
            if readline is not None:
                readline.set_completer(old)
                try:
                    os.makedirs(os.path.dirname(os.path.abspath(history)), exist_ok=True)
                    readline.write_history_file(history)
                except OSError as e:
                    print(f"vt ftp: history not saved: {e.strerror}", file=sys.stderr)
        return True

    def finish(self) -> None:
        """At quit: store everything, record a state if the tree changed."""
        if self.wt.live:
            if not self.quiet:
                print("vt ftp: the changes are live; the mount records them", file=sys.stderr)
            return
        root, recorded = self.wt.sync(self.args.comment)
        if self.wt.archive is None:
            print(root)
        elif not self.quiet:
            what = "recorded a new state" if recorded else "no change, no state recorded"
            print(f"vt ftp: {self.wt.archive.path}: {what}", file=sys.stderr)

    # -- completion --------------------------------------------------------

    def completenames(self, text, *ignored):
        return [n + " " for n in super().completenames(text, *ignored)]

    def completedefault(self, text, line, begidx, endidx):
        words = line[:begidx].split()
        if not words:
            return []
        c = ALIASES.get(words[0].lower(), words[0].lower())
        kinds = ARG_KINDS.get(c, "")
        pos = len([w for w in words[1:] if not w.startswith("-")])
        kind = kinds[min(pos, len(kinds) - 1)] if kinds else ""
        if kind == "R":
            return self._complete_remote(text)
        if kind == "L":
            return self._complete_local(text)
        return []

    def _complete_remote(self, text: str) -> list[str]:
        head, _, tail = text.rpartition("/")
        try:
            entries = self.wt.ls(head + "/" if head or text.startswith("/") else "")
        except (VTError, OSError):
            return []
        prefix = head + "/" if (head or text.startswith("/")) else ""
        return [
            prefix + e.name + ("/" if e.is_dir else " ") for e in entries if e.name.startswith(tail)
        ]

    @staticmethod
    def _complete_local(text: str) -> list[str]:
        head, _, tail = text.rpartition("/")
        d = (head or "/") if text.startswith("/") or head else "."
        try:
            names = sorted(os.listdir(os.path.expanduser(d)))
        except OSError:
            return []
        prefix = head + "/" if head or text.startswith("/") else ""
        out = []
        for n in names:
            if n.startswith(tail):
                full = os.path.join(os.path.expanduser(d), n)
                out.append(prefix + n + ("/" if os.path.isdir(full) else " "))
        return out

    # -- commands ----------------------------------------------------------

    @staticmethod
    def _words(arg: str) -> list[str]:
        try:
            return shlex.split(arg)
        except ValueError as e:
            raise ShellError(str(e)) from None

    def do_pwd(self, arg):
        """pwd: print the current directory in the tree."""
        print(self.wt.pwd())

    def do_cd(self, arg):
        """cd [PATH]: change the current directory in the tree (default: the top)."""
        (path,) = _nargs(self._words(arg), 0, 1, "cd [PATH]") or ["/"]
        self.wt.cd(path)

    def do_ls(self, arg):
        """ls [-l] [PATH]: list a directory of the tree (-l: mode, owner, size, time)."""
        from vtstore.cli.ls import _line

        flags, words = _flags(self._words(arg), "l")
        for path in words or [""]:
            if len(words) > 1:
                print(f"{path}:")
            for e in self.wt.ls(path):
                print(_line(e, "l" in flags))

    def do_inspect(self, arg):
        """inspect [PATH]: type, size, mode, time, dirent and block refs, block layout."""
        (path,) = _nargs(self._words(arg), 0, 1, "inspect [PATH]") or [""]
        for k, v in self.wt.inspect(path).items():
            print(f"{k}: {v}")

    def do_cat(self, arg):
        """cat PATH: write a file of the tree to stdout."""
        (path,) = _nargs(self._words(arg), 1, 1, "cat PATH")
        out = sys.stdout.buffer
        sys.stdout.flush()
        for chunk in self.wt.read(path):
            out.write(chunk)
        out.flush()

    def do_get(self, arg):
        """get PATH [LOCAL]: copy a file or tree of the tree to the local filesystem."""
        words = _nargs(self._words(arg), 1, 2, "get PATH [LOCAL]")
        where = self.wt.get(*words)
        if not self.quiet:
            print(f"{words[0]} -> {where}")

    def do_put(self, arg):
        """put LOCAL [PATH]: store a local file or tree in the tree (default: its name, here)."""
        words = _nargs(self._words(arg), 1, 2, "put LOCAL [PATH]")
        if self.wt.live:
            self.wt.put(*words)
            return
        from vtstore.cli.progress import TreeProgress

        with TreeProgress(self.args, "put", store=self.wt.store) as progress:
            progress.scan_tree(words[0])
            self.wt.put(
                *words,
                store=progress.store,
                on_file=lambda st: progress.update(st.bytes_read + st.bytes_reused, st.files),
            )

    def do_bind(self, arg):
        """bind PATH REF: make PATH the file or tree a dirent or block ref names."""
        path, ref = _nargs(self._words(arg), 2, 2, "bind PATH REF")
        self.wt.bind(path, ref)

    def do_clone(self, arg):
        """clone SRC DST: a copy of SRC at DST sharing every block (O(1))."""
        self.wt.clone(*_nargs(self._words(arg), 2, 2, "clone SRC DST"))

    def do_mkdir(self, arg):
        """mkdir [-p] PATH...: make directories (-p: with their parents, no error if there)."""
        flags, words = _flags(self._words(arg), "p")
        for path in _nargs(words, 1, 1 << 16, "mkdir [-p] PATH..."):
            if "p" in flags and self.wt.exists(path) and self.wt.lookup(path).is_dir:
                continue
            self.wt.mkdir(path, parents="p" in flags)

    def do_rm(self, arg):
        """rm [-r] PATH...: remove entries (-r: directories with what they hold)."""
        flags, words = _flags(self._words(arg), "rf")
        for path in _nargs(words, 1, 1 << 16, "rm [-r] PATH..."):
            self.wt.rm(path, recursive="r" in flags)

    def do_mv(self, arg):
        """mv SRC DST: move or rename (into DST if it is a directory)."""
        self.wt.mv(*_nargs(self._words(arg), 2, 2, "mv SRC DST"))

    def do_link(self, arg):
        """link TARGET PATH: a symbolic link at PATH pointing to TARGET."""
        self.wt.link(*_nargs(self._words(arg), 2, 2, "link TARGET PATH"))

    def do_splice(self, arg):
        """splice PATH OFFSET REF [LENGTH]: replace LENGTH octets (default 0: insert)
        at OFFSET of a file with the content REF names, by reference."""
        w = _nargs(self._words(arg), 3, 4, "splice PATH OFFSET REF [LENGTH]")
        self.wt.splice(w[0], int(w[1]), w[2], int(w[3]) if len(w) == 4 else 0)

    def do_crop(self, arg):
        """crop PATH START END: keep only the octets [START:END) of a file."""
        path, start, end = _nargs(self._words(arg), 3, 3, "crop PATH START END")
        self.wt.crop(path, int(start), int(end))

    def do_peer(self, arg):
        """peer [STORE]: use STORE (a store spec) for pull and push; alone: show it."""
        from vtstore.cli.push import _open

        words = _nargs(self._words(arg), 0, 1, "peer [STORE]")
        if not words:
            print(self.wt.peer_spec or "no peer")
            return
        store = _open(self.args, words[0], readonly=False)
        self.wt.set_peer(words[0], store)

    def do_pull(self, arg):
        """pull SRC [PATH]: copy the tree SRC names in the peer (a ref, X.vt@SEL/path,
        [clause]NAME/path) into this store and bind it at PATH (default: its name)."""
        words = _nargs(self._words(arg), 1, 2, "pull SRC [PATH]")
        st = self.wt.pull(*words)
        if not self.quiet:
            print(f"pulled {words[0]}: {st.done} blocks, {st.bytes_sent} bytes copied")

    def do_push(self, arg):
        """push PATH [ARCHIVE]: copy the tree at PATH to the peer (and append it as a
        new state of the peer's named ARCHIVE); prints its dirent ref."""
        words = _nargs(self._words(arg), 1, 2, "push PATH [ARCHIVE]")
        d, _ = self.wt.push(*words)
        print(d)

    def do_merge(self, arg):
        """merge THEIRS [BASE]: merge the tree THEIRS (a ref or state) into the current
        directory three-way against BASE; conflicts keep both (NAME.vt-conflict)."""
        words = _nargs(self._words(arg), 1, 2, "merge THEIRS [BASE]")
        conflicts = self.wt.merge(*words)
        if conflicts:
            print(f"{len(conflicts)} conflicts, both versions kept: {', '.join(conflicts[:10])}")

    def do_sync(self, arg):
        """sync [COMMENT]: store everything and record a state now (if the tree changed)."""
        root, recorded = self.wt.sync(arg.strip() or self.args.comment)
        print(root if self.wt.archive is None or recorded else "no change")

    def do_ref(self, arg):
        """ref [PATH]: print the dirent ref of PATH (default: the top of the tree)."""
        (path,) = _nargs(self._words(arg), 0, 1, "ref [PATH]") or ["/"]
        print(self.wt.ref(path))

    def do_lcd(self, arg):
        """lcd [DIR]: change the local directory (default: home)."""
        (d,) = _nargs(self._words(arg), 0, 1, "lcd [DIR]") or ["~"]
        os.chdir(os.path.expanduser(d))

    def do_lpwd(self, arg):
        """lpwd: print the local directory."""
        print(os.getcwd())

    def do_lls(self, arg):
        """lls [DIR]: list a local directory."""
        (d,) = _nargs(self._words(arg), 0, 1, "lls [DIR]") or ["."]
        for n in sorted(os.listdir(d)):
            print(n + ("/" if os.path.isdir(os.path.join(d, n)) else ""))

    def do_shell(self, arg):
        """!CMD: run CMD in the local shell."""
        sys.stdout.flush()
        r = subprocess.run(arg, shell=True)
        if r.returncode:
            raise ShellError(f"!{arg}: exit status {r.returncode}")

    def do_quit(self, arg):
        """quit: leave; record a new state if the tree changed (Ctrl-D too)."""
        return True

    def do_help(self, arg):
        """help [CMD]: list the commands, or explain one."""
        if arg.strip():
            c = ALIASES.get(arg.strip().lower(), arg.strip().lower())
            f = getattr(self, "do_" + c, None)
            if f is None:
                raise ShellError(f"no command {arg.strip()!r}")
            print(f.__doc__)
            return
        for name in sorted(n[3:] for n in dir(self) if n.startswith("do_")):
            doc = getattr(self, "do_" + name).__doc__ or ""
            print(f"  {doc.splitlines()[0]}")
