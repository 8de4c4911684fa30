"""Log lines mask secrets in the traceback too, not only in the message."""

from __future__ import annotations

import io
import logging

from bot.logs import MaskSecrets

DSN = "postgresql://gardenbot:pg-s3cret@db.internal:5432/gardenbot"
TOKEN = "xoxb-1234-5678-abcdefSECRET"


def test_a_logged_exception_carrying_a_dsn_and_a_token_is_masked() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(MaskSecrets())
    logger = logging.getLogger("tests.masked")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ConnectionError(f"could not connect to {DSN} with token {TOKEN}")
        except ConnectionError:
            logger.exception("store call failed")
    finally:
        logger.removeHandler(handler)

    text = out.getvalue()
    assert "Traceback" in text and "ConnectionError" in text  # the traceback is still there
    assert "pg-s3cret" not in text
    assert TOKEN not in text
    assert "postgresql://gardenbot:***@db.internal" in text
