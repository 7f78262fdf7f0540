"""``ringfence run [FLAGS] -- CMD`` through the native launcher, from a kept request.

The first run of a request compiles as usual and keeps its plan for both fast paths
(``plancache.native_entry``). This one reads the native entry by the request's key, checks its
seal, and hands it to ``_launcher.oneshot``, which asks every question of the compile again
in C, builds the sandbox and runs the command; no module of the Python runner is imported.
A miss (an answer differs, no entry, no launcher) returns None: the caller goes on to the
Python fast path and then the usual one, as before.

What the command's end needs besides its status (refusals, names looked up, files left for
the host to move aside, the memory cap, a command that did not start) is handed to
``native_result``, which reports it as the Python runner does. A clean end (the common case)
is one audit line, written here without ``json`` or ``re``.

Imports only what runs a kept request: not ``from __future__`` (see entry.py).
"""

import os
import sys

OFF = "off"  # RINGFENCE_NATIVE=off: never this path
EXPLAIN = "explain"  # RINGFENCE_NATIVE=explain: say on stderr why a run did not take it


def run(args: "list[str]") -> "int | None":
    """The exit status of ``args`` run natively from a kept request, or None to go on."""
    mode = os.environ.get("RINGFENCE_NATIVE")
    if mode == OFF or os.environ.get("RINGFENCE_PLAN_CACHE") == "off":
        return None
    if not args or args[0] != "run" or "--" not in args:
        return None
    i = args.index("--")
    flags, command = args[:i], args[i + 1 :]
    if not command:
        return None
    got, why = _launch(flags, command)
    if got is None and mode == EXPLAIN:
        print(f"ringfence: not run by the native launcher: {why}", file=sys.stderr)
    return got


def _launch(flags: "list[str]", command: "list[str]") -> "tuple[int | None, str]":
    try:
        from ringfence.platforms.linux import _launcher  # type: ignore[attr-defined]
    except ImportError:
        return None, "the native launcher was not built here"
    from ringfence.plancache import key as keys

    try:
        cwd = os.getcwd()
    except OSError:
        return None, "no working directory"
    directory = keys.directory(os.environ)
    secret = _launcher.secret()
    if directory is None or secret is None:
        return None, "no plan cache here"
    request = keys.request_key(flags, cwd, os.environ)
    from ringfence.plancache.sealed import unsealed

    name = request + ".n"  # plancache.native_entry.SUFFIX
    data = unsealed(directory, name, request, secret)
    if data is None:
        return None, "no kept request"
    got = _launcher.oneshot(data, [os.fsencode(a) for a in command])
    if got[0] == "miss":
        return None, got[2].decode("utf-8", "replace")
    try:
        os.utime(os.path.join(directory, name))  # used: pruning drops the least recent
    except OSError:
        pass
    return _end(got, command, data), ""


def _end(
    got: "tuple[str, int, bytes, dict[str, object]]", command: "list[str]", data: bytes
) -> int:
    kind, value, _detail, info = got
    clean = (
        kind in ("exit", "signal")
        and not info.get("reports")
        and not info.get("names")
        and not info.get("oom_kills")
    )
    if not clean:
        from ringfence import native_result

        return native_result.finish(got, command, data)
    audit, audit_path, policy, cwd = audit_parts(data)
    returncode = value if kind == "exit" else 128 + value
    if audit:
        sig = None if kind == "exit" else value
        duration = info.get("duration", 0.0)
        assert isinstance(duration, float)
        _audit(audit_path, command, cwd, duration, returncode=returncode, sig=sig, policy=policy)
    return returncode


def _audit(
    path: str,
    command: "list[str]",
    cwd: str,
    duration: float,
    *,
    returncode: int,
    sig: "int | None",
    policy: str,
) -> None:
    import time

    from ringfence import auditfile

    argv = list(command)
    if any(auditfile.needs_redaction(a) for a in argv):
        from ringfence.audit import redact

        argv = [redact(a) for a in argv]
    line = auditfile.command_line(
        argv=argv,
        cwd=cwd,
        duration=duration,
        returncode=returncode,
        signal=sig,
        policy=policy,
        plan="cached",
        session=os.urandom(6).hex(),
        when=time.time(),
    )
    try:
        auditfile.append(path, (line + "\n").encode())
    except OSError as e:  # said once; the command's result is not lost
        print(f"ringfence: cannot write the audit log {path}: {e}", file=sys.stderr)


MAGIC_BYTES = 8  # plancache.native_entry.MAGIC
E_OPTIONS = 5  # plancache.native_entry.E_OPTIONS: the first record


def audit_parts(data: bytes) -> "tuple[bool, str, str, str]":
    """Whether to audit, the log's path, the plan's digest and cwd, from an entry's options
    record (written first by ``plancache.native_entry.encode``)."""
    if data[MAGIC_BYTES] != E_OPTIONS:
        raise ValueError("the options record comes first")
    length = int.from_bytes(data[MAGIC_BYTES + 1 : MAGIC_BYTES + 5], "little")
    body = data[MAGIC_BYTES + 5 : MAGIC_BYTES + 5 + length]
    path, digest, cwd = (os.fsdecode(p) for p in body[9:].split(b"\0"))
    return body[8] == 1, path, digest, cwd
