"""Where the copied outside fixtures live (tests/fixtures, see its README): inside the repository."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SLACK_FIXTURES = FIXTURES / "slack"
PAYLOADS = SLACK_FIXTURES / "payloads"
CHINOOK_SQL = FIXTURES / "pg" / "Chinook_PostgreSql.sql"
