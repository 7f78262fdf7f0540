"""Turn user-given paths into the canonical absolute paths a Policy holds.

This is the one place policy construction looks at the filesystem: a writable root is
resolved once, and refused when it reaches its target through a symlink that lies inside a
writable area — such a link may have been planted by an earlier sandboxed command to turn
"make build/ writable" into "make ~/.ssh writable".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from ringfence.errors import PolicyError
from ringfence.policy import semantics


def absolute(flag: str, path: str) -> str:
    if not path:
        raise PolicyError(f"{flag}: empty path")
    if "\0" in path:
        raise PolicyError(f"{flag}: path contains a NUL byte")
    if not os.path.isabs(path):
        raise PolicyError(f"{flag}: {path!r} is relative; give an absolute path")
    return os.path.normpath(path)


def existing_dir(flag: str, path: str) -> str:
    p = absolute(flag, path)
    if not os.path.exists(p):
        raise PolicyError(f"{flag}: {p} does not exist")
    if not os.path.isdir(p):
        raise PolicyError(f"{flag}: {p} is not a directory")
    return os.path.realpath(p)


def symlinks_on_path(path: str) -> list[str]:
    """Every component of absolute ``path`` that is a symlink (lexically, in order)."""
    found = []
    cur = "/"
    for part in [p for p in path.split("/") if p]:
        cur = os.path.join(cur, part)
        if os.path.islink(cur):
            found.append(cur)
            cur = os.path.realpath(cur)
    return found


def writable_root(flag: str, path: str, trusted_writable: Iterable[str]) -> str:
    """Canonical writable root; refuse links planted inside already-writable areas."""
    p = absolute(flag, path)
    for link in symlinks_on_path(p):
        for root in trusted_writable:
            if semantics.is_under(link, root):
                raise PolicyError(
                    f"{flag}: {p} passes through the symlink {link}, which lies inside the "
                    f"writable root {root} (a sandboxed command could have planted it). Give "
                    f"the real path {os.path.realpath(p)} if that is what you mean"
                )
    return existing_dir(flag, p)


def plain(flag: str, path: str) -> str:
    """Canonical path for protect/deny-read entries, which may not exist yet."""
    p = absolute(flag, path)
    return os.path.realpath(p)


# Shared directories that are never a project: made writable, they would hand the command
# other programs' temporary files and sockets.
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def account_home() -> str | None:
    """The home directory of the caller's account (the password database), resolved: where
    its secrets and start-up files are, whatever ``$HOME`` says (unset, or elsewhere)."""
    import pwd

    try:
        found = pwd.getpwuid(os.getuid()).pw_dir
    except (KeyError, OverflowError):
        return None
    return os.path.realpath(found) if found and os.path.isabs(found) and found != "/" else None


def default_workspace(cwd: str, home: str | None) -> str:
    """The workspace a caller gets by not naming one: the current directory, unless that
    would make the whole home directory (or more) writable.

    Run from ``$HOME``, the cwd default would let a command write ``~/.config/systemd``,
    ``~/.local/bin`` or ``~/.pam_environment``, which run later with the user's full rights.
    Naming such a directory with ``--workspace`` stays possible (its persistence locations
    are then protected); taking it silently is not.
    """
    ws = os.path.realpath(cwd)
    homes = [home] if home and os.path.isabs(home) else []
    account = account_home()  # $HOME may be unset or point elsewhere: this counts too
    if account:
        homes.append(account)
    why = None
    if ws == "/":
        why = "it is the root directory"
    for h in dict.fromkeys(os.path.realpath(h) for h in homes if h and h != "/"):
        if why is None and semantics.is_under(h, ws):
            why = "it is your home directory" if ws == h else "it contains your home directory"
    if why is None and any(semantics.is_under(shared, ws) for shared in SHARED_DIRS):
        why = "it is, or holds, a directory every program shares"
    if why is not None:
        raise PolicyError(
            f"workspace: the current directory {ws} would become writable, and {why}. Run from "
            "a project directory, or pass --workspace explicitly if you mean it"
        )
    return ws


def socket_path(flag: str, path: str) -> str:
    """Canonical path for ``--allow-socket``: an existing unix socket, or a directory of them
    (``$XDG_RUNTIME_DIR``). Resolved, because the name guard compares where a socket really is
    (``/var/run/docker.sock`` is ``/run/docker.sock``)."""
    p = absolute(flag, path)
    real = os.path.realpath(p)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise PolicyError(f"{flag}: {p} does not exist; give the path of a unix socket") from None
    except OSError as e:
        raise PolicyError(f"{flag}: {p}: {e.strerror}") from None
    if not (stat.S_ISSOCK(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise PolicyError(
            f"{flag}: {p} is not a unix socket (nor a directory of sockets); give the socket's path"
        )
    return real
