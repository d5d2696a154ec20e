"""Log output for people and for log shippers: ``SIP_LOG_FORMAT=text`` or ``json``.

``json`` writes one JSON object per line with loguru's serializer (``{"text":
..., "record": {...}}``: time, level, message, module, function, line,
exception, and ``record.extra``), the form Vector, Fluent Bit, Promtail and
the like read as it is. Every record's ``extra`` has a ``call_id``: the
SIP Call-ID of the call the line is about (the server runs each call's work
in a log context with it, see :mod:`pipecat_sip.server`), or null.

Example:
    ::

        configure_logging(os.environ.get("SIP_LOG_FORMAT", "text"), "INFO")
        logger.bind(call_id="a84b4c76e66710").info("hello")
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from loguru import logger

__all__ = ["LOG_FORMATS", "configure_logging"]

#: The values ``SIP_LOG_FORMAT`` takes.
LOG_FORMATS = ("text", "json")

_TEXT_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{name}</cyan>:<cyan>{function}</cyan>:<cyan>{line}</cyan> - <level>{message}</level>"
)


def _with_call_id(record: Any) -> None:
    record["extra"].setdefault("call_id", None)


def configure_logging(
    log_format: str = "text", level: str = "INFO", *, sink: TextIO | None = None
) -> int:
    """Replace loguru's sinks with one writing ``log_format`` at ``level`` and above.

    Args:
        log_format: ``"text"`` (loguru's usual line) or ``"json"`` (one JSON
            object per line, loguru's serializer, ``record.extra.call_id`` on
            every line).
        level: Least level written ("DEBUG", "INFO", ...).
        sink: Where to write; default standard error.

    Returns:
        The loguru sink id.

    Raises:
        ValueError: ``log_format`` is not one of :data:`LOG_FORMATS`.
    """
    choice = log_format.strip().lower()
    if choice not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    logger.remove()
    logger.configure(patcher=_with_call_id)
    out = sink if sink is not None else sys.stderr
    if choice == "json":
        return logger.add(out, level=level, serialize=True)
    return logger.add(out, level=level, format=_TEXT_FORMAT)
