"""Logging as the CLI sets it up, for programs that embed a worker, client or manager.

Library code only logs; it never configures logging on import. Under uvicorn (which sets up its
own loggers alone) or in a plain script, easyjobs' INFO lines — "connected to manager at ...",
"worker ... connected" — go nowhere until something shows them: ``configure_logging()``.
"""

from __future__ import annotations

import logging
import os
import sys

from .jsonlog import JsonFormatter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler ``configure_logging`` adds (so a second call adds no other)."""


def configure_logging(level: str | int | None = None, json: bool = False) -> None:
    """Show easyjobs' log lines at ``level`` (default ``EASYJOBS_LOG_LEVEL``, else INFO).

    With no handler on the root logger, they go to stderr in the CLI's format, or as one JSON
    object a line with ``json`` (``easyjobs.jsonlog``); an application that has configured
    logging keeps its own handlers and only the level is set. Calling it again changes the
    level.
    """
    chosen = level if level is not None else os.environ.get("EASYJOBS_LOG_LEVEL") or "INFO"
    logger = logging.getLogger("easyjobs")
    logger.setLevel(chosen.upper() if isinstance(chosen, str) else chosen)
    if logging.getLogger().handlers or any(isinstance(h, _Handler) for h in logger.handlers):
        return
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False  # the root logger, unconfigured, would print WARNINGs twice
