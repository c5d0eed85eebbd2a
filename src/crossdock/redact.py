"""Keep secrets out of everything that leaves the process: logs, task logs, API answers, pages."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_QUERY_SECRET = re.compile(r"(?i)([?&](?:api_?key|token|access_token|password|secret|client_secret)=)[^&#\s]+")


class Redactor:
    """Replaces every known secret value (and secret-looking query parameters) with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in self._secrets)) if self._secrets else None

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self.__init__([*self._secrets, secret])  # type: ignore[misc]

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)


NO_SECRETS = Redactor()
