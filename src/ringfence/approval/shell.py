"""Split a shell command line into simple commands, or say why it cannot be judged.

A real grammar (tree-sitter-bash), not ``shlex``: ``bash -lc "ls && rm -rf ~"`` must show
both commands. Only plain words joined by ``&&``, ``||``, ``;`` and ``|`` are accepted;
anything that runs or expands something we cannot see (``$(...)``, backticks, ``$VAR``,
assignments, subshells, functions, loops, background jobs, here-documents, redirections other
than to ``/dev/null``) makes the line :class:`Unjudgeable`, which callers treat as "not known
to be safe", never as safe.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


class Unjudgeable(Exception):
    """The command line uses a construct whose effect cannot be read from its words."""


class Pattern(str):
    """An unquoted word with ``*``, ``?`` or ``[``: the shell replaces it with the names of
    files that match, which the repository chooses (a file called ``-delete`` is an option to
    ``find``); safe.py accepts it only where every argument is harmless."""

    __slots__ = ()


_GLOB = frozenset("*?[")


@lru_cache(maxsize=1)
def _parser() -> Any:
    import tree_sitter
    import tree_sitter_bash

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


_SEPARATORS = frozenset({"&&", "||", ";", "\n"})


def split(script: str) -> list[list[str]]:
    """The simple commands of ``script``, in order, each as its argv."""
    if "\\\n" in script:
        # bash joins the two lines (``tr\<newline>uncate``); the grammar ends a word there.
        raise Unjudgeable("a line continuation (backslash-newline)")
    tree = _parser().parse(script.encode())
    root = tree.root_node
    if root.has_error:
        raise Unjudgeable("the command line does not parse as shell")
    commands: list[list[str]] = []
    _walk(root, commands)
    if not commands:
        raise Unjudgeable("no command")
    return commands


def _walk(node: Any, out: list[list[str]]) -> None:
    kind = node.type
    if kind in ("program", "list"):
        for child in node.children:
            if child.is_named:
                _walk(child, out)
            elif child.type not in _SEPARATORS:
                raise Unjudgeable(f"'{child.type}' (background or other control operator)")
    elif kind == "pipeline":
        for child in node.children:
            if child.is_named:
                _walk(child, out)
            elif child.type != "|":
                raise Unjudgeable(f"'{child.type}' in a pipeline")
    elif kind == "command":
        out.append(_command(node))
    elif kind == "redirected_statement":
        body = node.child_by_field_name("body")
        for child in node.named_children:
            if child == body:
                continue
            if child.type != "file_redirect" or not _to_dev_null(child):
                raise Unjudgeable("a redirection (only to /dev/null is judged)")
        if body is None:
            raise Unjudgeable("a redirection without a command")
        _walk(body, out)
    elif kind == "comment":
        return
    else:
        raise Unjudgeable(f"{kind.replace('_', ' ')}")


def _to_dev_null(redirect: Any) -> bool:
    dest = redirect.child_by_field_name("destination")
    ops = [c.type for c in redirect.children if not c.is_named]
    return dest is not None and _word(dest) == "/dev/null" and set(ops) <= {">", ">>", "&>"}


def _command(node: Any) -> list[str]:
    argv: list[str] = []
    for child in node.named_children:
        if child.type == "command_name":
            argv.append(_word(child.named_children[0]))
        elif child.type == "variable_assignment":
            raise Unjudgeable("a variable assignment before the command")
        else:
            argv.append(_word(child))
    if not argv:
        raise Unjudgeable("no command name")
    return argv


def _word(node: Any) -> str:
    kind = node.type
    text: str = node.text.decode("utf-8", "surrogateescape")
    if kind == "word":
        if "$" in text or "`" in text:
            raise Unjudgeable("an expansion")
        bare = _unquoted(text)
        _no_braces(bare)
        word = _unescape(text)
        return Pattern(word) if _GLOB & set(bare) else word
    if kind == "number":
        return str(text)
    if kind == "raw_string":
        return str(text[1:-1])
    if kind == "string":
        parts = []
        for child in node.children:
            if child.type == '"':
                continue
            if child.type != "string_content":
                raise Unjudgeable(f"{child.type.replace('_', ' ')} inside double quotes")
            parts.append(child.text.decode("utf-8", "surrogateescape"))
        return _unescape("".join(parts), '"\\$`\n')
    if kind == "concatenation":
        # The grammar splits ``{a,b}`` into words of their own: look at the unquoted whole.
        _no_braces(
            "".join(
                _unquoted(c.text.decode("utf-8", "surrogateescape")) if c.type == "word" else "\0"
                for c in node.named_children
            )
        )
        parts = [_word(c) for c in node.named_children]
        joined = "".join(parts)
        return Pattern(joined) if any(isinstance(p, Pattern) for p in parts) else joined
    raise Unjudgeable(kind.replace("_", " "))


def _no_braces(bare: str) -> None:
    """``{a,b}`` and ``{1..9}`` (unquoted) become several words: the words judged would not
    be the ones run (``find . {-exec,x}``)."""
    if "{" in bare and "}" in bare and ("," in bare or ".." in bare):
        raise Unjudgeable("a brace expansion")


def _unquoted(text: str) -> str:
    """``text`` (an unquoted word) without its backslash-escaped characters: what the shell
    may still expand."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _unescape(text: str, escapable: str | None = None) -> str:
    """Drop the backslash before a character (outside quotes: any; in double quotes: only
    ``escapable``, as the shell does)."""
    out, i = [], 0
    while i < len(text):
        if (
            text[i] == "\\"
            and i + 1 < len(text)
            and (escapable is None or text[i + 1] in escapable)
        ):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
