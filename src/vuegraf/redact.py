"""Keep configured passwords and tokens out of every log line.

Client libraries sometimes put credentials in messages (a URL with a password
in an exception, a debug dump of request headers). A filter on the root
handlers sees every record that is about to be written, whichever logger it
came from, and replaces each secret, also in its URL-, JSON- and repr-escaped forms,
with `***` in the message, its arguments, the traceback and the stack.

The filter runs before the handler's formatter, so whatever the log format (text, logfmt,
json: `vuegraf.logformat`), a secret is masked in the raw text before the format escapes its
quotes, backslashes or newlines, and no escaped copy of it can reach the output.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
# Shorter "secrets" would mask ordinary words all over the log and protect nothing.
MIN_SECRET_LENGTH = 3


def _forms(secret: str) -> set[str]:
    """The secret as it may appear in text: as is, URL-encoded, JSON-escaped (ASCII or not),
    and as Python shows it inside a repr: a dict or an exception's arguments logged with
    %s or %r double a backslash and write a newline as `\\n`."""
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }


class RedactingFilter(logging.Filter):
    """Rewrites a record so that no configured secret survives formatting."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        forms = {f for s in secrets if len(s) >= MIN_SECRET_LENGTH for f in _forms(s)}
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is None:
            return True
        # The final message, arguments merged, so a secret split across them is caught too.
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not turn into a crash at the call site
            message = f"{record.msg!s} {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install_redaction(
    secrets: Iterable[str], handlers: Iterable[logging.Handler] | None = None
) -> RedactingFilter:
    """Add the filter to `handlers` (default: the root logger's), replacing an earlier one."""
    redacting = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redacting)
    return redacting
