"""Which read API a store is read back through, from how the server answers.

The queries themselves run against real servers in test_store_readback.py; here a local HTTP
server plays the answers real servers give when an API is missing or failing, which no
server installed here gives on demand: InfluxDB 2's web page for an unknown path, a plain
404, 405 or 501, VictoriaMetrics' canned `/query` reply and its 400 "unsupported path", a 503,
a 401, a query InfluxDB could not parse.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from vuegraf.config import TagConfig
from vuegraf.model import Scale
from vuegraf.sinks.base import StoreReadError
from vuegraf.sinks.readback import (
    FirstAnswering,
    FirstOf,
    HttpEndpoint,
    InfluxQLReader,
    PrometheusReader,
    StoreReader,
)

T = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)

WEB_PAGE = b"<!doctype html><html><head><title>InfluxDB</title></head><body></body></html>"
VM_CANNED = (
    b'{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],'
    b'"values":[["_internal"]]}]}]}'
)
EMPTY_INFLUXQL = b'{"results":[{"statement_id":0}]}'
INFLUXQL_ANSWER = (
    b'{"results":[{"statement_id":0,"series":[{"name":"energy_usage","tags":'
    b'{"device_name":"Kitchen"},"columns":["time","last"],"values":[[1795464000,1.5]]}]}]}'
)
PROMETHEUS_ANSWER = (
    b'{"status":"success","data":{"resultType":"vector","result":[{"metric":'
    b'{"account_name":"Home","detailed":"False","device_name":"Oven"},'
    b'"value":[1795464059,"1795463940"]}]}}'
)


class Answers:
    """What the server answers per path: a list of (status, body), the last one repeated."""

    def __init__(self) -> None:
        self.by_path: dict[str, list[tuple[int, bytes]]] = {}
        self.asked: list[str] = []

    def next(self, path: str) -> tuple[int, bytes]:
        self.asked.append(path)
        queue = self.by_path.get(path, [(404, b"404 page not found")])
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def server() -> Iterator[tuple[str, Answers]]:
    answers = Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            status, body = answers.next(urlsplit(self.path).path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", answers
    httpd.shutdown()
    httpd.server_close()


def chooser(url: str) -> tuple[FirstAnswering, HttpEndpoint]:
    http = HttpEndpoint(url, token="t", timeout=10)
    tags = TagConfig()
    readers: list[StoreReader] = [
        InfluxQLReader(http, "vue", tags, False),
        PrometheusReader(http, tags, False),
    ]
    return FirstAnswering("influxdb-v2", readers), http


def read(choice: FirstAnswering) -> dict[tuple[str, str], datetime]:
    return choice.last_times("Home", Scale.MINUTE, T - timedelta(days=7), T)


@pytest.mark.parametrize(
    ("query", "prometheus", "both_say"),
    [
        ((404, b"404 page not found"), (200, WEB_PAGE), ("HTTP 404", "not this API's")),
        ((405, b""), (404, b"not found"), ("HTTP 405", "HTTP 404")),
        ((501, b'{"error":"not implemented"}'), (501, b""), ("HTTP 501", "HTTP 501")),
        ((200, WEB_PAGE), (422, b'{"status":"error","error":"unknown func"}'),
         ("not InfluxQL's", "HTTP 422: unknown func")),
    ],
)
def test_no_read_api_is_a_non_retryable_error_saying_what_each_answered(
    server: tuple[str, Answers],
    query: tuple[int, bytes],
    prometheus: tuple[int, bytes],
    both_say: tuple[str, str],
) -> None:
    url, answers = server
    answers.by_path = {"/query": [query], "/api/v1/query": [prometheus]}
    choice, http = chooser(url)
    with pytest.raises(StoreReadError) as info:
        read(choice)
    assert not info.value.retryable
    text = str(info.value)
    assert text.startswith("no read API answered: InfluxQL /query: ")
    assert both_say[0] in text.split("; Prometheus")[0] and both_say[1] in text.split("; ")[1]
    assert "<" not in text  # an error page's tags are left out
    # Remembered: asked again, the server is not.
    asked = len(answers.asked)
    with pytest.raises(StoreReadError):
        read(choice)
    assert len(answers.asked) == asked
    http.close()


@pytest.mark.parametrize(
    "query",
    [
        (200, VM_CANNED),  # VictoriaMetrics' reply to any /query
        (400, b"unsupported path requested: /query"),
    ],
)
def test_victoria_metrics_answers_are_passed_over_for_the_prometheus_api(
    server: tuple[str, Answers], query: tuple[int, bytes]
) -> None:
    url, answers = server
    answers.by_path = {"/query": [query], "/api/v1/query": [(200, PROMETHEUS_ANSWER)]}
    choice, http = chooser(url)
    assert read(choice) == {("", "Oven"): datetime(2026, 11, 23, 19, 59, tzinfo=UTC)}
    assert read(choice) == {("", "Oven"): datetime(2026, 11, 23, 19, 59, tzinfo=UTC)}
    assert answers.asked == ["/query", "/api/v1/query", "/api/v1/query"]
    http.close()


@pytest.mark.parametrize(
    ("answer", "retryable"),
    [
        ((503, b"overloaded"), True),
        ((401, b'{"error":"authorization failed"}'), True),
        ((403, b'{"error":"error authorizing query: requires READ on vue"}'), True),
        ((200, b'{"results":[{"statement_id":0,"error":"query timeout"}]}'), True),
        ((400, b'{"error":"error parsing query: found EOF"}'), False),
        ((200, b'{"results":[{"statement_id":0,"error":"retention policy not found: x"}]}'),
         False),
    ],
)
def test_the_stores_own_refusal_is_raised_as_it_is_and_nothing_else_is_tried(
    server: tuple[str, Answers], answer: tuple[int, bytes], retryable: bool
) -> None:
    url, answers = server
    answers.by_path = {"/query": [answer, (200, INFLUXQL_ANSWER)]}
    choice, http = chooser(url)
    with pytest.raises(StoreReadError) as info:
        read(choice)
    assert info.value.retryable is retryable and not info.value.unsupported
    assert str(info.value).startswith("InfluxQL /query: ")
    assert "write" not in str(info.value)
    # The next attempt (a later tick) asks InfluxQL again, and it answers this time.
    assert read(choice) == {("", "Kitchen"): datetime(2026, 11, 23, 20, 0, tzinfo=UTC)}
    assert answers.asked == ["/query", "/query"]
    http.close()


@pytest.mark.parametrize(
    "answer",
    [
        (200, b'{"results":[{"statement_id":0,"error":"database not found: vue"}]}'),
        (404, b'{"code":"not found","message":"no dbrp mapping for database \\"vue\\""}'),
    ],
)
def test_a_bucket_without_database_is_said_so_and_not_retried(
    server: tuple[str, Answers], answer: tuple[int, bytes]
) -> None:
    url, answers = server
    answers.by_path = {"/query": [answer]}
    choice, http = chooser(url)
    with pytest.raises(StoreReadError) as info:
        read(choice)
    assert not info.value.retryable and not info.value.unsupported
    assert str(info.value).startswith("InfluxQL /query: no database 'vue'")
    assert answers.asked == ["/query"]
    http.close()


def test_an_unreachable_store_is_retryable_and_says_no_url() -> None:
    choice, http = chooser("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(StoreReadError) as info:
        read(choice)
    assert info.value.retryable
    assert str(info.value) == "InfluxQL /query: store unreachable (ConnectionError)"
    http.close()


def test_threads_asking_at_once_all_get_the_reader_that_answers():
    """The graphs page asks from several request threads at once: each must pass over the
    reader the server does not offer exactly once, never the one after it too."""
    asked: list[str] = []

    class NotOffered:
        name = "influxql"

        def ask(self) -> str:
            asked.append(self.name)
            time.sleep(0.05)  # every thread is inside before the first one passes it over
            raise StoreReadError("not this API", retryable=False, unsupported=True)

    class Offered:
        name = "prometheus"

        def ask(self) -> str:
            return "ok"

    choice: FirstOf[NotOffered | Offered] = FirstOf("vm", [NotOffered(), Offered()])
    answers: list[str] = []

    def ask() -> None:
        try:
            answers.append(choice.ask(lambda reader: reader.ask()))
        except Exception as err:  # noqa: BLE001 - the failure is the finding
            answers.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == ["ok"] * 8
    assert asked == ["influxql"]  # passed over once, not once per thread
    assert choice.ask(lambda reader: reader.ask()) == "ok"
