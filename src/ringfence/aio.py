"""The session API for asyncio: ``async with AsyncSession(policy) as s: await s.run([...])``.

A mirror of :class:`ringfence.Session`, method for method, where every call that would block
(starting the runner, starting or waiting for a command, closing) is awaited instead; the
command itself runs exactly as with the blocking API. ``await ringfence.arun(...)`` is
``ringfence.run`` for asyncio.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ringfence import aio_process
from ringfence.aio_process import AsyncProcess
from ringfence.completed import CompletedProcess, StdSpec
from ringfence.policy.model import Policy
from ringfence.session import DEFAULT_OUTPUT_LIMIT, Session


class AsyncSession:
    """A sandbox built once, for many commands, awaited: ``start``/``aclose`` (or
    ``async with``), ``spawn`` (an :class:`AsyncProcess`) and ``run`` (a
    :class:`CompletedProcess`), with the same arguments as :class:`Session`'s."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        workspace: str | os.PathLike[str] | None = None,
        profile: str | None = None,
        config: bool = True,
        cwd: str | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        on_network_request: Callable[[str, int], str] | None = None,
        audit: bool | str = True,
        approval: str | None = None,
        rules: Any = None,
        approver: Callable[[Any], bool | None] | None = None,
    ) -> None:
        self.session = Session(
            policy,
            workspace=workspace,
            profile=profile,
            config=config,
            cwd=cwd,
            output_limit=output_limit,
            on_network_request=on_network_request,
            audit=audit,
            approval=approval,
            rules=rules,
            approver=approver,
        )

    async def start(self) -> AsyncSession:
        await asyncio.get_running_loop().run_in_executor(None, self.session.start)
        return self

    async def aclose(self) -> None:
        """End every command still running and the sandbox; idempotent."""
        await asyncio.get_running_loop().run_in_executor(None, self.session.close)

    async def __aenter__(self) -> AsyncSession:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def spawn(
        self,
        args: str | Sequence[str],
        *,
        stdin: StdSpec = None,
        stdout: StdSpec = None,
        stderr: StdSpec = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        shell: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        pty: bool | tuple[int, int] = False,
        executable: str | os.PathLike[str] | None = None,
        pass_fds: Collection[int] = (),
        umask: int = -1,
        bufsize: int = 0,
        universal_newlines: bool | None = None,
        start_new_session: bool = True,
        close_fds: bool = True,
    ) -> AsyncProcess:
        return await aio_process.spawn(
            self.session, args, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
            shell=shell, text=text, encoding=encoding, errors=errors, pty=pty,
            executable=executable, pass_fds=pass_fds, umask=umask, bufsize=bufsize,
            universal_newlines=universal_newlines, start_new_session=start_new_session,
            close_fds=close_fds,
        )  # fmt: skip

    async def run(
        self,
        args: str | Sequence[str],
        *,
        stdin: StdSpec = None,
        input: bytes | str | None = None,
        stdout: StdSpec = None,
        stderr: StdSpec = None,
        capture_output: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = False,
        shell: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        output_limit: int | None = None,
        executable: str | os.PathLike[str] | None = None,
        pass_fds: Collection[int] = (),
        umask: int = -1,
        bufsize: int = 0,
        universal_newlines: bool | None = None,
        start_new_session: bool = True,
        close_fds: bool = True,
    ) -> CompletedProcess:
        return await aio_process.run(
            self.session, args, stdin=stdin, input=input, stdout=stdout, stderr=stderr,
            capture_output=capture_output, cwd=cwd, env=env, timeout=timeout, check=check,
            shell=shell, text=text, encoding=encoding, errors=errors, output_limit=output_limit,
            executable=executable, pass_fds=pass_fds, umask=umask, bufsize=bufsize,
            universal_newlines=universal_newlines, start_new_session=start_new_session,
            close_fds=close_fds,
        )  # fmt: skip


async def arun(
    args: str | Sequence[str],
    *,
    policy: Policy | None = None,
    workspace: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    config: bool = True,
    **kwargs: Any,
) -> CompletedProcess:
    """One command in a one-command session, awaited:
    ``await ringfence.arun(["make", "test"], workspace=...)``."""
    async with AsyncSession(policy, workspace=workspace, profile=profile, config=config) as s:
        return await s.run(args, **kwargs)


__all__ = ["AsyncProcess", "AsyncSession", "arun"]
