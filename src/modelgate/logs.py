"""Logging set-up for the CLI and components: level from ``MODELGATE_LOG_LEVEL``."""

from __future__ import annotations

import logging
import os

LOG_LEVEL_ENV = "MODELGATE_LOG_LEVEL"


def configure_logging(level: str | None = None) -> None:
    """Configure root logging once; ``level`` overrides ``$MODELGATE_LOG_LEVEL`` (default INFO)."""
    name = (level or os.environ.get(LOG_LEVEL_ENV) or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, name, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
