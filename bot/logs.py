"""Logging to stderr with every secret masked, whatever a library puts in a message."""

from __future__ import annotations

import logging
import sys

from core.secrets import mask_text

_TRACEBACKS = logging.Formatter()


class MaskSecrets(logging.Filter):
    """Masks the message, and the traceback and stack text a formatter would add to it: an
    exception's text (a DSN with its password, a token) is masked like any message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: format the traceback once, masked.
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
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
