"""The redaction primitives: which strings are secrets, and text with them (and credential-shaped substrings)
replaced by `***`. A foundation module (it imports nothing of the project), so the settings can register the key
the moment they read it; `flows.ops.observability` applies it to logs, errors, ops rows and artifacts.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

REDACTED = "***"
# Shorter values are not treated as secrets: redacting every "a" or "42" would garble the logs.
MIN_SECRET_LENGTH = 6

_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    # Authorization: Bearer <token> / Authorization=Basic <x> / authorization: <token>
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(bearer|basic|token)\s+)?[^\s'\",;}]+"),
     lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}{REDACTED}"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {REDACTED}"),
    # key=..., api_key=..., token=... in query strings, env dumps and messages
    (re.compile(r"(?i)\b((?:[a-z0-9]+_)*(?:api[_-]?key|apikey|key|access[_-]?token|token|secret|password|passwd))"
                r"=([^&\s'\",;]+)"), rf"\1={REDACTED}"),  # also COINCAP_API_KEY=... in an env dump
    # "api_key": "..." in JSON and reprs
    (re.compile(r"(?i)([\"'](?:api[_-]?key|apikey|access[_-]?token|token|secret|password|authorization)[\"']"
                r"\s*:\s*[\"'])[^\"']+"), rf"\1{REDACTED}"),
    # Slack-style incoming webhooks: the path is the credential
    (re.compile(r"(?i)(https?://hooks\.slack(?:-gov)?\.com/)[^\s'\"<>)]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)(https?://[^\s/'\"]+/hooks/)[A-Za-z0-9]{12,}"), rf"\1{REDACTED}"),  # Mattermost, Rocket.Chat
    (re.compile(r"(?i)(https?://[^\s/'\"]+/api/webhooks/)[^\s'\"<>)]+"), rf"\1{REDACTED}"),  # Discord
    (re.compile(r"(?i)(https?://[^\s/'\"]*webhook\.office\.com/)[^\s'\"<>)]+"), rf"\1{REDACTED}"),  # Teams
    # Credentials in a URL: scheme://user:password@host (also a lone user or token before the @)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@'\"<>]+@"), rf"\1{REDACTED}@"),
]  # fmt: skip

_secrets: set[str] = set()
_secrets_re: re.Pattern[str] | None = None
_lock = threading.Lock()


def _variants(value: str) -> set[str]:
    """The forms a secret takes in text: as given and stripped, escaped as repr and JSON show it, URL-encoded."""
    found: set[str] = set()
    for form in {value, value.strip()}:
        found |= {form, repr(form)[1:-1], json.dumps(form)[1:-1], quote(form, safe=""), quote_plus(form, safe="")}
    return found


def register_secret(value: str | None) -> None:
    """Treat `value` (in its `_variants`, and for a URL also its path and query) as a secret from now on."""
    global _secrets_re
    if not value:
        return
    found = _variants(value)
    parts = urlsplit(value.strip())
    if parts.scheme in ("http", "https") and parts.netloc:
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(tail.strip("/")) >= MIN_SECRET_LENGTH:
            found |= _variants(tail)
    found = {f for f in found if len(f.strip()) >= MIN_SECRET_LENGTH}
    with _lock:
        if found <= _secrets:
            return
        _secrets.update(found)
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: a URL before its own path
        _secrets_re = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """`text` without registered secrets or credential-shaped substrings."""
    if not text:
        return text
    known = _secrets_re
    if known is not None:
        text = known.sub(REDACTED, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Free-text columns of the ops tables (run metrics, data-quality results): what an error or a check says.
TEXT_COLUMNS = ("error", "detail", "description", "message", "reason")


def redact_value(value: Any) -> Any:
    """`value` with `redact` applied to every string in it (lists, tuples and dict values included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    return value


def redact_row(row: Mapping[str, Any], columns: tuple[str, ...] = TEXT_COLUMNS) -> dict[str, Any]:
    """A copy of an ops-table row with its free-text `columns` redacted (what warehouse writers store)."""
    return {k: redact_value(v) if k in columns else v for k, v in row.items()}
