"""Logging to stderr with every secret masked, whatever a library puts in a message."""

from __future__ import annotations

import logging
import sys

from core.secrets import mask_text


class MaskSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # slack_bolt logs whole request bodies at INFO when a signature is wrong.
    for noisy in ("httpx", "httpcore", "psycopg.pool", "apscheduler", "slack_bolt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
