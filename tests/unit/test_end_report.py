"""A command's end report with many findings: sent in parts that each fit one message on the
session socket, and put back together by the host in order (an outside review made 200 long
findings fail the run with EMSGSIZE)."""

from __future__ import annotations

import socket
import threading

from ringfence.connection import Pending
from ringfence.platforms.linux import protocol
from ringfence.platforms.linux.command_init import _first, _send_end


def test_many_findings_arrive_whole_and_in_order() -> None:
    records = [
        {"kind": "refused_pointer", "path": f"/w/{i:03d}/" + "\x01" * 500, "detail": "d" * 1000}
        for i in range(300)
    ]
    host, init = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    got: list[dict] = []
    with host, init:
        sent = {"id": 5, "exit": 0, "reports": list(records)}
        p = Pending(5)

        # read as it goes: the socket holds far less than all the parts together (a part
        # larger than the socket's largest message fails the send with EMSGSIZE)
        def read() -> None:
            while True:
                msg, _ = protocol.recv(host) or ({}, [])
                got.append(msg)
                if "exit" in msg:
                    return
                p.reports_parts.extend(msg["reports_part"])

        reader = threading.Thread(target=read)
        reader.start()
        _send_end(init, sent)
        reader.join(10)
    assert len(got) > 2
    p.finish(got[-1])
    assert p.report["reports"] == records
    assert p.report["exit"] == 0


def test_the_unchecked_names_sent_fit_their_budget() -> None:
    names = [f"/w/{i}/" + "\x01" * 4000 for i in range(50)]
    first = _first(names, 32 << 10)
    assert first == names[:1]  # at least one, however long
    assert _first(["/a", "/b"], 32 << 10) == ["/a", "/b"]
