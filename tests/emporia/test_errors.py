"""Whose side a failure is on: every library exception an account can meet becomes the
`EmporiaError` subclass that says it, and its words in the log line and the health check.

The exceptions are the libraries' own, built as they build them: botocore's `ClientError`
for Cognito (raised by the Cognito stand-in's outage switch, and with botocore's own
NotAuthorizedException code), requests' `HTTPError` from `raise_for_status` on a real
`Response`, a real refused connection.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import pytest
import requests
from botocore.exceptions import ClientError  # type: ignore[import-untyped]  # no stubs
from pycognito.exceptions import (  # type: ignore[import-untyped]  # no stubs
    ForceChangePasswordException,
    SMSMFAChallengeException,
    SoftwareTokenMFAChallengeException,
)

from vuegraf.emporia.errors import (
    ACCOUNT_STATES,
    EmporiaApiChanged,
    EmporiaAuthFailed,
    EmporiaDown,
    EmporiaError,
    EmporiaLoginChallenge,
    EmporiaRateLimited,
    EmporiaServerError,
    EmporiaUnreachable,
    PyemvueUnsupported,
    classified,
    for_status,
    plainly,
    reason,
    reworded,
)
from vuegraf.simulator.cognito import CognitoStandIn, NotAuthorizedException

HOST = "api.emporiaenergy.com"


def http_error(status: int, url: str) -> requests.HTTPError:
    """What pyemvue's `response.raise_for_status()` raises for an answer of `status`."""
    response = requests.Response()
    response.status_code = status
    response.url = url
    response.reason = "Bad Request"
    with pytest.raises(requests.HTTPError) as raised:
        response.raise_for_status()
    return raised.value


def cognito_outage(status: int) -> ClientError:
    standin = CognitoStandIn()
    standin.failing_status = status
    with pytest.raises(ClientError) as raised:
        standin._fail_if_failing()
    assert standin.failed_calls == 1
    return raised.value


def test_the_login_service_failing_is_emporias_side_with_its_status():
    err = classified("token login failed", cognito_outage(502), HOST, login=True)
    assert type(err) is EmporiaServerError and err.state == "emporia_down"
    assert err.why == "HTTP 502 from the login service"
    assert str(err).startswith("token login failed: ClientError: An error occurred (502) "
                               "when calling the InitiateAuth operation")
    assert reason(err) == "Emporia is failing (HTTP 502 from the login service)"
    assert plainly(err) == (
        "Emporia is failing (its side, HTTP 502 from the login service); retrying with "
        "back-off, holes are filled once it answers"
    )


@pytest.mark.parametrize("refused", [
    # botocore's modeled error: a ClientError whose code names it (status 400).
    ClientError({"Error": {"Code": "NotAuthorizedException",
                           "Message": "Incorrect username or password."},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}, "InitiateAuth"),
    # The Cognito stand-in's (and any library's) exception of that name.
    NotAuthorizedException("Refresh Token has been revoked"),
], ids=["botocore", "by-name"])
def test_refused_credentials_are_the_users_side(refused):
    err = classified("password login failed", refused, HOST, login=True)
    assert type(err) is EmporiaAuthFailed and err.state == "auth_failed"
    assert reason(err) == "Emporia refused the login (check email and password in vuegraf.json)"
    assert plainly(err).startswith("Emporia refused the login (your side: check email and "
                                   "password in vuegraf.json; SIGHUP reloads it)")


def test_customers_refusing_a_login_whose_credentials_were_accepted_is_emporias_side():
    err = classified("token login failed", http_error(400, f"https://{HOST}/customers"), HOST,
                     login=True)
    assert type(err) is EmporiaDown and err.state == "emporia_down"
    assert err.why == "HTTP 400 at customers after the credentials were accepted"


def test_an_endpoint_gone_is_an_api_change():
    url = f"https://{HOST}/devices/123/locationProperties"
    err = classified("location request failed", http_error(404, url), HOST)
    assert type(err) is EmporiaApiChanged and err.state == "api_changed"
    assert err.why == "HTTP 404 at devices/123/locationProperties: the endpoint is gone"
    chart = http_error(404, f"https://{HOST}/AppAPI?apiMethod=getChartUsage&deviceGid=1")
    assert classified("chart", chart, HOST).why.startswith("HTTP 404 at getChartUsage:")
    assert "vuegraf needs an update" in plainly(err) and "neither your side" in plainly(err)


@pytest.mark.parametrize("unreadable", [
    KeyError("deviceListUsages"),
    TypeError("'NoneType' object is not subscriptable"),
], ids=["key", "type"])
def test_an_answer_pyemvue_cannot_read_is_an_api_change(unreadable):
    err = classified("usage request failed", unreadable, HOST)
    assert type(err) is EmporiaApiChanged
    assert err.why.startswith("an answer pyemvue cannot read: ")


def answer_of(body: bytes) -> requests.exceptions.JSONDecodeError:
    """What pyemvue's `response.json()` raises for a 200 whose body is `body`."""
    response = requests.Response()
    response.status_code = 200
    response._content = body
    response.encoding = "utf-8"
    with pytest.raises(requests.exceptions.JSONDecodeError) as raised:
        response.json()
    return raised.value


@pytest.mark.parametrize("body", [
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",  # a proxy's or a gateway's page
    b'{"deviceListUsages": {"instant": "2026-11-24T15:06:00Z", "devices": [{"devi',  # cut short
    b"",
], ids=["html", "cut-short", "empty"])
def test_an_answer_that_is_no_json_at_all_is_emporias_side(body):
    err = classified("usage request failed", answer_of(body), HOST)
    assert type(err) is EmporiaDown and err.state == "emporia_down"
    assert err.why == "an answer that is not JSON (an HTML page, or cut short)"
    assert plainly(err).startswith("Emporia is failing (its side, an answer that is not JSON")
    # json's own error (what a parser other than requests' raises) reads the same.
    plain = classified("usage request failed", json.JSONDecodeError("Expecting value", "<", 0),
                       HOST)
    assert type(plain) is EmporiaDown


@pytest.mark.parametrize(("challenge", "why"), [
    (ForceChangePasswordException("Password change is required."),
     "the login service asks for a new password: set one in the Emporia app, then in "
     "vuegraf.json"),
    (SoftwareTokenMFAChallengeException("Do MFA challenge",
                                        {"ChallengeName": "SOFTWARE_TOKEN_MFA"}),
     "the login service asks for a second factor (MFA), which vuegraf cannot give: turn MFA "
     "off for this account"),
    (SMSMFAChallengeException("Do SMS MFA", {"ChallengeName": "SMS_MFA"}),
     "the login service asks for a second factor (MFA), which vuegraf cannot give: turn MFA "
     "off for this account"),
], ids=["new-password", "mfa-app", "mfa-sms"])
def test_a_login_that_asks_more_than_the_password_is_the_users_side(challenge, why):
    err = classified("password login failed", challenge, HOST, login=True)
    assert isinstance(err, EmporiaAuthFailed) and err.state == "auth_failed"
    assert type(err) is EmporiaLoginChallenge and err.why == why
    # Its own reason, not "check email and password": the password was right.
    assert reason(err) == f"Emporia's login needs you ({why})"
    assert plainly(err) == f"Emporia's login needs you (your side: {why}; SIGHUP reloads it)"


def test_a_refused_connection_is_unreachable_with_its_host():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        with pytest.raises(requests.ConnectionError) as refused:
            requests.get(f"http://127.0.0.1:{port}/customers", timeout=5)
    err = classified("usage request failed", refused.value, HOST)
    assert type(err) is EmporiaUnreachable and err.state == "emporia_down"
    assert str(err) == f"usage request failed: 127.0.0.1:{port}: connection refused"
    assert plainly(err).startswith("Emporia cannot be reached (its side, or the network's)")


def test_statuses_after_pyemvue_turned_them_into_an_empty_answer():
    assert type(for_status("m", 404, "getDeviceListUsages")) is EmporiaApiChanged
    assert type(for_status("m", 503)) is EmporiaServerError
    assert type(for_status("m", 400)) is EmporiaDown
    assert type(for_status("m", 403)) is EmporiaDown


def test_rewording_keeps_the_class_and_the_few_words():
    limited = EmporiaRateLimited("HTTP 429", datetime(2026, 1, 1, tzinfo=UTC), sent=False)
    again = reworded(limited, "usage request failed")
    assert isinstance(again, EmporiaRateLimited)
    assert (again.not_before, again.sent, again.why) == (limited.not_before, False, "HTTP 429")
    assert again.state == "rate_limited"
    auth = reworded(EmporiaAuthFailed("refused", "the login service refused them"), "start-up")
    assert type(auth) is EmporiaAuthFailed and str(auth) == "start-up: refused"
    assert auth.why == "the login service refused them"


def test_every_class_has_one_of_the_exported_states():
    classes: list[type[EmporiaError]] = [
        EmporiaError, EmporiaDown, EmporiaUnreachable, EmporiaServerError, EmporiaRateLimited,
        EmporiaAuthFailed, EmporiaApiChanged, PyemvueUnsupported,
    ]
    assert {c.state for c in classes} == set(ACCOUNT_STATES) - {"ok"}
    # Emporia's side, for the rules that keep stored tokens (vuegraf.emporia.session).
    assert all(issubclass(c, EmporiaDown) for c in (EmporiaUnreachable, EmporiaServerError,
                                                    EmporiaRateLimited))
    assert not issubclass(EmporiaAuthFailed, EmporiaDown)


def test_a_pyemvue_vuegraf_cannot_use_is_said_as_such():
    err = PyemvueUnsupported("pyemvue 0.19.0 is not supported by this vuegraf: it has no x")
    assert err.state == "api_changed"  # vuegraf (here: its install) needs an update
    assert reason(err) == ("the installed pyemvue is not the one this vuegraf needs "
                           "(reinstall vuegraf)")
    assert plainly(err) == ("this vuegraf cannot talk to Emporia (pyemvue 0.19.0 is not "
                            "supported by this vuegraf: it has no x)")
