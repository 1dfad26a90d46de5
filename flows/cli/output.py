"""What the CLI prints, and where: rich consoles and plain streams that redact every secret, and the log setup."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flows.ops.observability import redact
from flows.settings import Settings

# The logger the CLI's own lines go to (its JSON log entries carry this name).
log = logging.getLogger("flows.cli")

# ---- everything the CLI prints goes through `redact` --------------------------------------------------------
#
# A key or a webhook URL can end up in an error message, a quality check's detail, a summary or a query's result;
# none of it is printed. Strings, Text and table cells are redacted before rich lays them out (a key that a table
# column folds over two lines would not match afterwards), and every write to stdout or stderr once more (for
# renderables made of something else, and for what is written without rich: CSV, JSON, URLs, usage errors).


class _RedactedStream:
    """sys.stdout or sys.stderr (looked up at each write, so that captures and test runners still see the output),
    with `redact` applied to everything written. Not an io.IOBase: nothing to close or flush at exit."""

    def __init__(self, name: Literal["stdout", "stderr"]) -> None:
        self._name = name

    @property
    def _stream(self) -> Any:
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return int(self._stream.fileno())

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"


def _redacted(renderable: Any) -> Any:
    """`renderable` with `redact` applied to its text before layout: strings, Text, and a table's title, caption,
    headers and cells (other renderables are redacted as written)."""
    if isinstance(renderable, str):
        return redact(renderable)
    if isinstance(renderable, Text):
        plain = redact(renderable.plain)
        if plain == renderable.plain:
            return renderable
        return Text(plain, style=renderable.style, justify=renderable.justify, overflow=renderable.overflow,
                    no_wrap=renderable.no_wrap, end=renderable.end)  # fmt: skip
    if isinstance(renderable, Table):
        renderable.title, renderable.caption = _redacted(renderable.title), _redacted(renderable.caption)
        for column in renderable.columns:
            column.header, column.footer = _redacted(column.header), _redacted(column.footer)
            cells = getattr(column, "_cells", None)  # rich keeps a column's cells there (no public setter)
            if isinstance(cells, list):
                cells[:] = [_redacted(cell) for cell in cells]
    return renderable


class _RedactedConsole(Console):
    """rich's Console whose `print` redacts what it is given, writing to a `_RedactedStream`."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(_redacted(o) for o in objects), **kwargs)


out_stream = _RedactedStream("stdout")
err_stream = _RedactedStream("stderr")
# Rich falls back to 80 columns when piped; the summary table needs more to stay readable in CI logs.
out = _RedactedConsole(file=out_stream, width=None if sys.stdout.isatty() else 120)
err = _RedactedConsole(file=err_stream, width=None if sys.stderr.isatty() else 120)


def setup_logging() -> None:
    """Redact secrets from logs; JSON lines on stderr with PIPELINE_LOG_FORMAT=json (bad settings: the command says)."""
    try:
        settings = Settings()
    except ValidationError:
        settings = None
    from flows.orchestration.logs import configure_logging

    configure_logging(settings)


def json_logs() -> bool:
    from flows.ops.observability import JsonLinesHandler

    return any(isinstance(h, JsonLinesHandler) for h in logging.getLogger().handlers)
