"""The proxy of one session, served on its own asyncio loop in a thread of the host process.

It ends with the session (``close``); since the listening socket lives in the sandbox's
network namespace, nothing can reach the proxy once the sandbox is gone, and nothing is left
on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from ringfence.network.proxy import DomainProxy, NetEvent
from ringfence.policy.netrules import NetRules


class ProxyService:
    def __init__(
        self, listener: socket.socket, rules: NetRules, *, allow_local: bool = False
    ) -> None:
        self.events: list[NetEvent] = []
        self._lock = threading.Lock()
        self.proxy = DomainProxy(rules, allow_local=allow_local, on_event=self._record)
        self.loop = asyncio.new_event_loop()
        self._listener = listener
        self._started = threading.Event()
        self._server: asyncio.Server | None = None
        self.thread = threading.Thread(target=self._main, name="ringfence-proxy", daemon=True)
        self.thread.start()
        self._started.wait(10)

    def _record(self, event: NetEvent) -> None:
        with self._lock:
            self.events.append(event)

    def events_since(self, index: int) -> list[NetEvent]:
        with self._lock:
            return self.events[index:]

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._server = await self.proxy.serve(self._listener)
            self._started.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def close(self) -> None:
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.stop()

        if self.loop.is_running():
            self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)
        self._listener.close()
