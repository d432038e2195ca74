"""No configured secret reaches a log line: message, arguments, traceback, any logger."""

from __future__ import annotations

import io
import logging
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from vuegraf.config import parse_config
from vuegraf.redact import MASK, RedactingFilter, install_redaction

PASSWORD = "p@ss w/rd&more+"
TOKEN = "tok3n-abcdef"


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records go through a handler carrying the filter, as cli wires it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    install_redaction([PASSWORD, TOKEN], handlers=[handler])
    logger = logging.getLogger("vuegraf.test_redact")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_secret_in_message_and_args(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    logger.info("login with %s failed", PASSWORD)
    logger.warning(f"token {TOKEN} rejected")  # on purpose: already formatted
    logger.error("%s", {"auth": TOKEN})
    assert out.getvalue().splitlines() == [
        "INFO vuegraf.test_redact login with *** failed",
        "WARNING vuegraf.test_redact token *** rejected",
        "ERROR vuegraf.test_redact {'auth': '***'}",
    ]


def test_url_encoded_and_json_escaped_forms(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    quoted = urllib.parse.quote(PASSWORD, safe="")
    plus = urllib.parse.quote_plus(PASSWORD)
    logger.info("GET http://vue:%s@influx:8086/query?p=%s", quoted, plus)
    logger.info('body {"password": "p@ss w/rd&more+"}')
    text = out.getvalue()
    assert "http://vue:***@influx:8086/query?p=***" in text
    assert '{"password": "***"}' in text
    assert "rd&more" not in text


def test_traceback_and_stack_are_redacted(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    try:
        raise ConnectionError(f"could not connect with password {PASSWORD}")
    except ConnectionError:
        logger.exception("write failed")
    logger.info("here", stack_info=True)
    text = out.getvalue()
    assert "ConnectionError: could not connect with password ***" in text
    assert "Traceback" in text
    assert PASSWORD not in text


def test_the_record_itself_is_clean_for_every_later_handler() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a=%s b=%d", (TOKEN, 5), None)
    assert RedactingFilter([TOKEN]).filter(record) is True
    assert (record.msg, record.args, record.getMessage()) == ("a=*** b=5", None, "a=*** b=5")


def test_bad_format_arguments_do_not_raise() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", (TOKEN,), None)
    assert RedactingFilter([TOKEN]).filter(record) is True
    assert TOKEN not in record.getMessage()


def test_longer_secret_masked_whole_and_tiny_ones_ignored() -> None:
    redacting = RedactingFilter(["abc", "abcdef-long", "", "x"])
    assert redacting.redact("abcdef-long and abc and x") == f"{MASK} and {MASK} and x"
    assert RedactingFilter([]).redact("nothing to hide") == "nothing to hide"


def test_install_on_root_handlers_replaces_an_earlier_filter() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        first = install_redaction(["first-secret"])
        second = install_redaction(["second-secret"])
        assert handler.filters == [second]
        assert first is not second
    finally:
        root.removeHandler(handler)


def test_config_secrets_feed_the_filter(tmp_path: Path) -> None:
    data = {
        "influxDb": {"version": 2, "url": "http://i:8086", "org": "o", "bucket": "b"},
        "accounts": [{"name": "Home", "email": "me@example.com", "password": PASSWORD}],
        "mqtt": {"host": "m", "username": "u", "password": "mqtt-secret"},
    }
    data["influxDb"]["token"] = "${TOKEN}"  # type: ignore[index]
    cfg = parse_config(data, tmp_path / "v.json", environ={"TOKEN": TOKEN})
    redacting = RedactingFilter(cfg.secrets())
    text = f"{PASSWORD} {TOKEN} mqtt-secret me@example.com"
    assert redacting.redact(text) == "*** *** *** me@example.com"
