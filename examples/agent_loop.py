"""A minimal agent loop over `ringfence.Session`, runnable without a model.

    python examples/agent_loop.py [WORKSPACE]

A real agent would ask a model for the next tool call; here the calls are a scripted list.
Each one runs in one warm sandbox; refusals come back with the smallest widening that would
allow them, and the loop asks (here: a fixed answer) before running again wider.
"""

from __future__ import annotations

import sys
import tempfile

from ringfence import Policy, Session
from ringfence.escalation import ask_to_widen

SCRIPT = [
    "echo 'print(\"hello\")' > hello.py",
    "python3 hello.py",
    "ls -la",
    "touch /etc/not-allowed",
    "git init -q demo && git -C demo status --short",
]


def tool_call(session: Session, command: str) -> dict[str, object]:
    """What a model would get back for one `run_command` tool call."""
    r = session.run(command, shell=True, capture_output=True, text=True, timeout=60)
    return {
        "exit_code": r.returncode,
        "stdout": r.stdout[-2000:],
        "stderr": r.stderr[-2000:],
        "refused": r.violations,
        "created": r.created,
        "to_allow": [w["flag"] for w in r.widenings],
        "widenings": r.widenings,
    }


def main(workspace: str) -> None:
    policy = Policy(workspace=workspace)
    with Session(policy, cwd=workspace) as session:
        for command in SCRIPT:
            result = tool_call(session, command)
            print(f"$ {command}\n  -> {result['exit_code']} {result['stdout'].strip()!r}")
            if result["created"]:
                print(f"  created: {result['created']}")
            if result["refused"]:
                print(f"  refused: {result['refused']}; would need {result['to_allow']}")
                # A real host shows this to the user; the scripted user says no.
                wider = ask_to_widen(policy, result["widenings"], lambda req: False)  # type: ignore[arg-type]
                print(f"  widened: {'yes' if wider else 'no (the user declined)'}")
    print("all scripted tool calls done")


if __name__ == "__main__":
    main(
        sys.argv[1]
        if len(sys.argv) > 1
        else tempfile.mkdtemp(prefix="ringfence-agent-", dir="/var/tmp")
    )
