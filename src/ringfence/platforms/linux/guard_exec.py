"""The name guard's supervisor, executed by the native launcher's guard stub (launcher/guard.c).

The stub has waited, holding the guard filter's listener, until the command made its first
call the guard decides; that call still waits in the kernel, unanswered. This runs in its
place (same process: ``python -I -S``, nothing from the environment) on the stub's
descriptors: the socket to the sandbox's pid 1, the listener, the guard lock, a memfd with
the plan's guard rules (``native_image``), and the pipe on which it tells the host itself of the
files left to its end check (``guard_tell``). From here it is the Python runner's guard
(``steps.serve_commands``): the same supervisor, rules, reports and end-of-command check.

Runs inside the sandbox, under the command's Landlock domain, with CAP_SYS_PTRACE only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from ringfence.platforms.linux import guard_rules, guard_tell, steps


def rules_from_json(data: bytes) -> guard_rules.GuardRules:
    """The rules ``native_image`` encoded (their init fields as JSON)."""
    fields: dict[str, Any] = json.loads(data)
    given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return guard_rules.GuardRules(**given)


def main() -> None:
    sock_fd, listener, lock_fd, rules_fd, told_fd = (int(a) for a in sys.argv[1:6])
    code = 0
    try:
        with os.fdopen(rules_fd, "rb") as f:
            rules = rules_from_json(f.read())
        for fd in (sock_fd, listener, lock_fd, told_fd):
            os.set_inheritable(fd, False)
        tell = guard_tell.PipeTell(told_fd)
        steps.serve_commands(socket.socket(fileno=sock_fd), listener, lock_fd, rules, tell)
    except BaseException as e:  # the listener closes with us: guarded calls then fail closed
        os.write(2, f"ringfence: name guard failed: {e}\n".encode())
        code = 1
    os._exit(code)
