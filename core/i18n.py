"""Every message exists in English and Japanese; commands and renderers ask for text by key."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from core.locales.en import MESSAGES as EN
from core.locales.ja import MESSAGES as JA

CATALOGS: dict[str, Mapping[str, str]] = {"en": EN, "ja": JA}


class _Keep(dict[str, Any]):
    """Leaves an unknown placeholder visible instead of failing on it."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Translator:
    def __init__(self, locale: str = "en") -> None:
        self.locale = locale if locale in CATALOGS else "en"
        self._messages = CATALOGS[self.locale]

    def __call__(self, key: str, /, **params: Any) -> str:
        template = self._messages.get(key) or EN.get(key) or key
        return string.Formatter().vformat(template, (), _Keep(params))
