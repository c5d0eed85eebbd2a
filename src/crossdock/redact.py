"""Keep secrets out of everything that leaves the process: logs, task logs, API answers, pages.

A secret rarely leaks as itself: a target echoes the ``Authorization: Basic …`` header it got, a URL carries a
password percent-encoded, an error quotes a database URL. So every secret is masked in its derived forms too
(base64 in both alphabets with and without padding, percent-encoded, JSON-escaped), and some shapes are masked
whatever their value: ``Authorization`` header values, ``Basic``/``Bearer`` credentials, the password of a
``scheme://user:password@host`` URL and secret-looking query parameters.

The redactor runs over every string of every API answer, so all of it is one regular expression, compiled once.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
#: a configured value shorter than this is not treated as a secret (it would mask ordinary words)
MIN_SECRET = 4
#: a derived form (base64, part of a base64 text) shorter than this is not masked: too likely to be ordinary text
MIN_DERIVED = 8

#: shapes that are secret whatever their value: the named group of each is masked, the rest kept. Every alternative
#: starts with a plain character (assertions come after it), so the regex engine skips ahead to the characters
#: that may start a match instead of trying each alternative at each position: that keeps the scan near memchr speed
_VALUE = r"[A-Za-z0-9._~+/=-]+"
_GENERIC = (
    # a header line or a JSON/dict echo of it: ``Authorization: Basic abc``, ``"authorization": "Bearer x"``
    *(
        rf"{a}(?<!\w{a})(?i:uthorization)[\"']?\s*[:=]\s*[\"']?(?:(?i:basic|bearer|digest|token|negotiate)\s+)?"
        rf"(?P<auth_{a}>{_VALUE})"
        for a in "Aa"
    ),
    # a credential after its scheme, anywhere; past its first letter it must hold a capital, a digit or a base64
    # sign, so prose ("Basic configuration", "Bearer tokens") stays as written
    *(
        rf"{b}(?<![\w-]{b})(?:asic|earer)\s+(?=[A-Za-z0-9._~+/-][A-Za-z0-9._~+/-]*[A-Z0-9+/_=-])"
        rf"(?P<scheme_{b}>[A-Za-z0-9._~+/-]{{8,}}=*)"
        for b in "Bb"
    ),
    # the password of scheme://user:password@host (the scheme itself is not matched: cheaper to scan)
    r"://[^\s/:@?#\"'<>]*:(?P<url>[^\s/@?#\"'<>]+)(?=@)",
    # secret-looking query or form parameters
    *(
        rf"\{q}(?i:api[_-]?key|token|access_token|password|passwd|secret|client_secret)=(?P<query_{i}>[^&#\s\"'<>]+)"
        for i, q in enumerate("?&")
    ),
)


def _b64(raw: bytes, urlsafe: bool) -> str:
    return (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode("ascii")


def derived_forms(secret: str) -> set[str]:
    """The secret and what it turns into when sent or quoted: base64, percent-encoding, JSON escapes.

    Base64 of a longer text that holds the secret (``user:password``, a JSON body) encodes it differently at
    each of the three byte offsets; the 4-character groups that lie wholly inside the secret are the same
    whatever surrounds it, so those cores are masked too.
    """
    forms = {secret}
    raw = secret.encode("utf-8")
    n = len(raw)
    for urlsafe in (False, True):
        whole = _b64(raw, urlsafe)
        forms |= {whole, whole.rstrip("=")}
        for shift in (0, 1, 2):
            encoded = _b64(b"\0" * shift + raw, urlsafe)
            start = 4 if shift else 0
            forms.add(encoded[start : 4 * ((shift + n) // 3)])
    forms |= {quote(secret, safe=""), quote(secret), quote_plus(secret, safe=""), quote_plus(secret)}
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in list(forms) if "%" in f}
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return {f for f in forms if f == secret or len(f) >= MIN_DERIVED}


def basic_pair(username: str, password: str) -> str:
    """What HTTP basic auth encodes: a secret of its own, so ``base64(user:password)`` gets masked whole."""
    return f"{username}:{password}"


_USERINFO = re.compile(r"://[^/:@?#]*:(?P<password>.+?)@")


def url_secrets(url: str) -> list[str]:
    """The password of a ``scheme://user:password@host`` URL, as written and percent-decoded.

    A URL too broken to parse (a space in the password, a bad host) still gives its password: the driver's
    error about that URL may quote it."""
    if "://" not in url or "@" not in url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password is None:
        found = _USERINFO.search(url)
        password = found.group("password") if found else None
    if not password:
        return []
    return [password, unquote(password)]


def redact_url(url: str) -> str:
    """A URL with its password masked, for banners, logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:{MASK}@{netloc}").geturl()


def _trie(words: Iterable[str]) -> list[str]:
    """Regex alternatives for many literals, as a trie: matching costs the length of a word, not their number.

    One alternative per first character, each starting with that character (see ``_GENERIC`` for why).

    Where one word extends another the longer is tried first, so a secret holding a shorter one is masked whole.
    """
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        chain = []
        while "" not in node and len(node) == 1:  # a run of single letters: one literal, no recursion
            ((ch, node),) = node.items()
            chain.append(re.escape(ch))
        keys = sorted(k for k in node if k)
        if not keys:
            return "".join(chain)
        alternatives = "(?:" + "|".join(re.escape(k) + emit(node[k]) for k in keys) + ")"
        return "".join(chain) + (alternatives + "?" if "" in node else alternatives)

    return [re.escape(ch) + emit(child) for ch, child in sorted(root.items())]


class Redactor:
    """Replaces every known secret, its derived forms and secret-looking shapes with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = {s for s in secrets if s and len(s) >= MIN_SECRET}
        self._build()

    def _build(self) -> None:
        forms: set[str] = set()
        for secret in self._secrets:
            forms |= derived_forms(secret)
        self._pattern = re.compile("|".join([*_trie(forms), *_GENERIC]))

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def add(self, *secrets: str) -> None:
        """Learn more secrets (a ``--db`` URL's password); the regex is rebuilt once."""
        new = {s for s in secrets if s and len(s) >= MIN_SECRET} - self._secrets
        if new:
            self._secrets |= new
            self._build()

    def extended(self, secrets: Iterable[str]) -> Redactor:
        """A redactor for these secrets as well as this one's (a connection's own credentials), still one regex."""
        return Redactor([*self._secrets, *secrets])

    def __call__(self, text: str) -> str:
        return self._pattern.sub(_replace, text)


def _replace(match: re.Match[str]) -> str:
    """A known secret (no group) goes whole; a generic shape keeps its context and loses its value group."""
    name = match.lastgroup
    if name is None:
        return MASK
    whole, start = match.group(0), match.start()
    return whole[: match.start(name) - start] + MASK + whole[match.end(name) - start :]


NO_SECRETS = Redactor()


class RedactingLogFilter(logging.Filter):
    """Masks secrets in a record's final message: a driver logs its exceptions as arguments, not as text."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = self.redact(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


@contextmanager
def redacting_logs(redact: Callable[[str], str], *names: str) -> Iterator[None]:
    """Redact what the named loggers log while the block runs (psycopg's pool logs failed connection attempts)."""
    log_filter = RedactingLogFilter(redact)
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(log_filter)
