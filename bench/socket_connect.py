"""What the unix socket rule costs a TCP connect: the name guard serves every connect().

    .venv/bin/python bench/socket_connect.py [N]

Runs a loop of N connects (blocking, then nonblocking) to a loopback server, bare and inside
``ringfence run``, and prints microseconds per connect. Each connect inside is one round trip
through the (Python) guard; see SECURITY.md, "Unix sockets on disk".
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

LOOP = """
import socket, sys, threading, time
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1024)
def accept():
    while True:
        srv.accept()[0].close()
threading.Thread(target=accept, daemon=True).start()
n = int(sys.argv[1])
for mode in ("blocking", "nonblocking"):
    t = time.perf_counter()
    for _ in range(n):
        s = socket.socket()
        if mode == "nonblocking":
            s.setblocking(False)
            s.connect_ex(srv.getsockname())
        else:
            s.connect(srv.getsockname())
        s.close()
    print(f"  {mode:<12} {(time.perf_counter() - t) / n * 1e6:7.1f} us per connect")
"""


def main() -> None:
    n = sys.argv[1] if len(sys.argv) > 1 else "3000"
    with tempfile.TemporaryDirectory(dir="/var/tmp") as ws:
        probe = os.path.join(ws, "loop.py")
        with open(probe, "w") as f:
            f.write(LOOP)
        print("bare:")
        subprocess.run([sys.executable, probe, n], check=True)
        print("ringfence run:")
        ringfence = [sys.executable, "-P", "-m", "ringfence", "run", "--"]
        subprocess.run([*ringfence, "python3", probe, n], check=True, cwd=ws)


if __name__ == "__main__":
    main()
