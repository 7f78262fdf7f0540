"""The official MCP SDK's two lines behind one small surface: 1.x (``FastMCP``) and 2.x
(``MCPServer``). Many agent stacks pin ``mcp<2``; the server must run on either.

(No ``from __future__ import annotations`` here: the SDKs read the tools' annotations at
runtime, and the wrappers below carry real objects.)

What differs, and how it is bridged:

- the server class, its ``Context`` and ``ToolError`` live in different modules;
- asking the person mid-call: 2.x must ask through a resolver parameter
  (``Annotated[ElicitationResult[T], Resolve(fn)]``), the only form that works on the
  2026-07-28 protocol, where a server may not send requests mid-call; 1.x calls
  ``ctx.elicit`` in the tool. :func:`add_tool` takes one *question* function and builds
  whichever the installed line needs; the tool body gets an :class:`Outcome` either way;
- what the client can do: 2.x ``ctx.client_capabilities``, 1.x the initialize parameters;
- argument errors: both hand back pydantic's multi-line dump; :class:`Server` turns it into
  one sentence naming each bad argument and what it must be (:func:`argument_error`), and
  refuses arguments a tool does not have (a misspelt ``timeout`` would otherwise be dropped
  without a word).

Which versions are supported is said once, in ``ringfence.cli.mcp.SUPPORTED``, checked
before this module is imported (so a missing or old SDK is named as such).
"""

import asyncio
import importlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ValidationError

__all__ = ["LINE", "Ask", "Context", "Outcome", "Server", "ToolError", "add_tool", "can_elicit"]

if TYPE_CHECKING:
    from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.server.mcpserver.resolve import Elicit, Resolve

    LINE = 2
    _Base = MCPServer
else:
    from mcp.server.elicitation import AcceptedElicitation, ElicitationResult

    try:
        from mcp.server.mcpserver import Context
        from mcp.server.mcpserver import MCPServer as _Base
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.server.mcpserver.resolve import Elicit, Resolve

        LINE = 2
    except ImportError:
        _fast = importlib.import_module("mcp.server.fastmcp")
        Context = _fast.Context
        _Base = _fast.FastMCP
        ToolError = importlib.import_module("mcp.server.fastmcp.exceptions").ToolError
        Elicit = Resolve = None
        LINE = 1


@dataclass(frozen=True)
class Ask:
    """A question function's request: put ``message`` to the person, answer as ``schema``."""

    message: str
    schema: type[BaseModel]


@dataclass(frozen=True)
class Outcome:
    """What a tool body learns from its question step.

    ``asked``: the question went to the person; ``answer``: what they accepted (None when
    they declined, cancelled, or were not asked); ``unreachable``: there was a question and
    this client cannot put it to anyone; ``value``: what the question function returned
    instead of a question."""

    asked: bool = False
    answer: BaseModel | None = None
    unreachable: bool = False
    value: Any = None


@dataclass(frozen=True)
class _Plain:
    value: Any


class _Unreachable:
    pass


def can_elicit(ctx: Any) -> bool:
    """Whether the client said it can ask its user (the elicitation capability)."""
    if LINE == 2:
        caps = ctx.client_capabilities
    else:
        params = getattr(ctx.session, "client_params", None)
        caps = getattr(params, "capabilities", None)
    return caps is not None and getattr(caps, "elicitation", None) is not None


def _from_result(result: Any) -> Outcome:
    if isinstance(result, AcceptedElicitation):
        data = result.data
        if isinstance(data, _Plain):
            return Outcome(value=data.value)
        if isinstance(data, _Unreachable):
            return Outcome(unreachable=True)
        return Outcome(asked=True, answer=data)
    return Outcome(asked=True)  # declined or cancelled


Question = Callable[..., Any]  # tool arguments by name -> Ask | anything else; may have
# ``inline = True``: it answers at once, on the event loop (see _asked)


def add_tool(
    app: Any,
    body: Callable[..., Awaitable[Any]],
    *,
    question: Question | None = None,
    schema: type[BaseModel] | None = None,
) -> None:
    """Register ``body`` as a tool. With ``question`` (a function of some of the tool's
    arguments, by name, returning :class:`Ask` or anything else), ``body`` takes a keyword
    ``outcome`` (:class:`Outcome`) and a ``Context`` parameter; the person is asked first
    when the question function says so, and the client can."""
    if question is None:
        app.add_tool(body, name=body.__name__, description=inspect.getdoc(body))
        return
    assert schema is not None
    sig = inspect.signature(body)
    params = [p for p in sig.parameters.values() if p.name != "outcome"]
    ctx_name = next(p.name for p in params if p.annotation is Context)
    asked = list(inspect.signature(question).parameters)
    wrapper = _line2(body, question, schema, asked) if LINE == 2 else _line1(body, question, asked)
    if LINE == 2:
        params.append(
            inspect.Parameter(
                "ringfence_asked",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[ElicitationResult[schema], Resolve(wrapper.resolver)],  # type: ignore[valid-type]
            )
        )
    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {
        "return": sig.return_annotation
    }
    wrapper.__name__ = wrapper.__qualname__ = body.__name__
    wrapper.__doc__ = body.__doc__
    wrapper.ctx_name = ctx_name
    app.add_tool(wrapper, name=body.__name__, description=inspect.getdoc(body))


async def _asked(question: Question, kw: dict[str, Any]) -> Any:
    """The question function's answer: in a worker thread (it may parse a shell line or
    check a widening), unless it says it is instant (``question.inline``): a thread hop is a
    noticeable part of a short command's round trip."""
    if getattr(question, "inline", False):
        return question(**kw)
    return await asyncio.to_thread(question, **kw)


def _line2(
    body: Callable[..., Awaitable[Any]],
    question: Question,
    schema: type[BaseModel],
    asked: list[str],
) -> Any:
    async def resolver(**kw: Any) -> Any:  # async: the SDK runs a plain one in a thread
        ctx = kw.pop("ringfence_ctx")
        got = await _asked(question, kw)
        if not isinstance(got, Ask):
            return _Plain(got)
        if not can_elicit(ctx):
            return _Unreachable()
        return Elicit(got.message, got.schema)

    rparams = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=Any) for n in asked
    ] + [inspect.Parameter("ringfence_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    resolver.__signature__ = inspect.Signature(rparams)  # type: ignore[attr-defined]
    resolver.__annotations__ = {p.name: p.annotation for p in rparams}
    resolver.__qualname__ = resolver.__name__ = f"{body.__name__}_question"

    async def tool(**kw: Any) -> Any:
        result = kw.pop("ringfence_asked")
        return await body(**kw, outcome=_from_result(result))

    tool.resolver = resolver  # type: ignore[attr-defined]
    return tool


def _line1(body: Callable[..., Awaitable[Any]], question: Question, asked: list[str]) -> Any:
    async def tool(**kw: Any) -> Any:
        ctx = kw[tool.ctx_name]  # type: ignore[attr-defined]
        got = await _asked(question, {n: kw[n] for n in asked})
        if not isinstance(got, Ask):
            outcome = Outcome(value=got)
        elif not can_elicit(ctx):
            outcome = Outcome(unreachable=True)
        else:
            outcome = _from_result(await ctx.elicit(got.message, got.schema))
        return await body(**kw, outcome=outcome)

    return tool


class Server(_Base):
    """The installed line's server, with argument errors a model can read in one go, served
    over ringfence's own stdio transport (mcp_stdio.py: the SDK's messages, fewer threads)."""

    async def run_stdio_async(self) -> None:
        from ringfence import mcp_stdio

        low = self._lowlevel_server if LINE == 2 else getattr(self, "_mcp_server")  # noqa: B009
        async with mcp_stdio.transport() as (read_stream, write_stream):
            await low.run(read_stream, write_stream, low.create_initialization_options())

    async def call_tool(self, name: str, arguments: dict[str, Any], *rest: Any, **kw: Any) -> Any:
        tool = self._tool_manager.get_tool(name)
        schema: Mapping[str, Any] = getattr(tool, "parameters", None) or {}
        known = schema.get("properties") or {}
        unknown = sorted(set(arguments or {}) - set(known)) if tool is not None else []
        if unknown:
            raise ToolError(
                f"{name} has no argument {', '.join(map(repr, unknown))} "
                f"(its arguments: {', '.join(known)})"
            )
        try:
            return await super().call_tool(name, arguments, *rest, **kw)
        except ToolError as e:
            cause = e.__cause__
            if isinstance(cause, ValidationError) and cause.title.endswith("Arguments"):
                raise ToolError(argument_error(name, cause, schema)) from None
            prefix = f"Error executing tool {name}: "  # both lines' wording
            text = str(e)
            if text.startswith(prefix):
                raise ToolError(f"{name}: {text.removeprefix(prefix)}") from e.__cause__
            raise


def argument_error(tool: str, error: ValidationError, schema: Mapping[str, Any]) -> str:
    """One sentence for every argument pydantic refused: its name, what it must be, and (a
    short form of) what was given."""
    props = schema.get("properties") or {}
    parts: dict[str, str] = {}
    for err in error.errors():
        loc = err.get("loc") or ("?",)
        field = str(loc[0])
        if field in parts:
            continue  # a union's members each report the same argument
        what = describe_type(props.get(field, {}))
        if err.get("type") == "missing":
            parts[field] = f"{field} is required ({what})"
        else:
            parts[field] = f"{field} must be {what}, not {_shown(err.get('input'))}"
    return f"{tool}: {'; '.join(parts.values())}."


def describe_type(schema: Mapping[str, Any]) -> str:
    """A JSON schema's type in words: ``a string or a list of strings``."""
    if "anyOf" in schema:
        kinds = [describe_type(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds)) or "a value"
    kind = schema.get("type")
    if kind == "array":
        items = describe_type(schema.get("items", {}))
        return "a list" if items == "a value" else f"a list of {_plural(items)}"
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    return {
        "string": "a string",
        "integer": "a whole number",
        "number": "a number",
        "boolean": "true or false",
        "object": "an object",
    }.get(str(kind), "a value")


def _plural(what: str) -> str:
    noun = what.split(" ", 1)[1] if what.startswith(("a ", "an ")) else what
    return noun + "s"


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
