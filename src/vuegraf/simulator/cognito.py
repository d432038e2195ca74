"""A stand-in for AWS Cognito, the one part of an Emporia login that cannot run here.

pyemvue's production path (`PyEmVue.login` and `pyemvue.auth.Auth`) does two things against AWS:
pycognito's `Cognito` logs in with the password and renews tokens, and `Auth` fetches the user
pool's JWKS once to read the access token's expiry. `CognitoStandIn` replaces exactly those:

- `cognito_class()` is a drop-in for pycognito's `Cognito` (the constructor, `authenticate`,
  `renew_access_token`, `get_user`, the token attributes and `client.exceptions`), backed by
  this object's users and tokens;
- the JWKS is served over real HTTP by a small local server, at `user_pool_url`;
- `failing_status` makes every password login and token renewal fail as botocore reports
  Cognito answering that status (a `ClientError`), for an outage of the login service.

Tokens are real RS256 JWTs signed with a key made at start, so pyemvue decodes and checks them
with PyJWT exactly as it does Cognito's. `check_token` tells the Emporia simulator (as its
`token_check`) whether an id token is one this pool issued and still accepts, so an expired or
revoked token is answered 401 there, as Emporia's gateway does. Nothing here is Emporia's:
the API is the simulator's, reached by pyemvue over HTTP as usual.

`patch_pyemvue(standin, api_root)` points pyemvue at the stand-in and its API root at the
simulator; everything else in pyemvue (`Auth.request` with its 5xx retries and refresh on 401,
the token file) runs unchanged. For tests and benchmarks only: vuegraf never imports this.
"""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from botocore.exceptions import ClientError  # type: ignore[import-untyped]  # no stubs
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

POOL_ID = "us-east-2_standin"
TOKEN_LIFETIME_S = 3600.0


class NotAuthorizedException(Exception):
    """What botocore raises for a wrong password or a revoked refresh token (same name, so
    code that tells errors apart by name sees the same thing)."""


class _Exceptions:
    NotAuthorizedException = NotAuthorizedException


class _Client:
    """`Cognito.client`: pyemvue only reads `client.exceptions.NotAuthorizedException`."""

    exceptions = _Exceptions


@dataclass
class _User:
    """What pycognito's `get_user()` returns, as far as pyemvue reads it."""

    _data: dict[str, str]


@dataclass
class CognitoStandIn:
    """A user pool: users, the tokens it issued, and the JWKS server. `start()`/`stop()`."""

    users: dict[str, str] = field(default_factory=dict)  # e-mail (lower case) -> password
    token_lifetime_s: float = TOKEN_LIFETIME_S
    password_logins: int = 0  # authenticate() that succeeded
    refused_logins: int = 0  # authenticate() with a wrong password or unknown user
    renewals: int = 0  # renew_access_token() that succeeded
    refused_renewals: int = 0
    jwks_fetches: int = 0
    # Seconds past `exp` the API still accepts an id token (JWT validators allow for clock
    # skew), so a test can let pyemvue see a token expire without the API refusing it first.
    api_leeway_s: float = 0.0
    # While set, every password login and token renewal fails the way botocore reports
    # Cognito answering this HTTP status (502: an outage of the login service) after its own
    # retries: a `ClientError` whose code is the status. `failed_calls` counts them.
    failing_status: int | None = None
    failed_calls: int = 0

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._valid_ids: set[str] = set()  # jti of id tokens the API accepts
        self._refresh: dict[str, str] = {}  # refresh token -> e-mail
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> CognitoStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the stdlib's name
                if self.path.rstrip("/") != f"/{POOL_ID}/.well-known/jwks.json":
                    self.send_error(404)
                    return
                with standin._lock:
                    standin.jwks_fetches += 1
                body = json.dumps(standin.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="cognito-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> CognitoStandIn:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def user_pool_url(self) -> str:
        """Where the JWKS is (`<url>/.well-known/jwks.json`), and every token's issuer."""
        assert self._httpd is not None, "start() first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{POOL_ID}"

    # -- tokens -------------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        key = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        key.update({"kid": self._kid, "alg": "RS256", "use": "sig"})
        return {"keys": [key]}

    def _token(self, email: str, use: str, jti: str) -> str:
        now = time.time()
        exp = now + self.token_lifetime_s
        claims = {
            "iss": self.user_pool_url,
            "sub": email,
            "email": email,
            "token_use": use,
            "jti": jti,
            "iat": int(now),
            "exp": int(exp),
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})

    def _issue(self, email: str) -> tuple[str, str]:
        """(access token, id token), the id token accepted by the API from now on."""
        jti = secrets.token_hex(12)
        with self._lock:
            self._valid_ids.add(jti)
        return self._token(email, "access", jti + "a"), self._token(email, "id", jti)

    def _claims(self, token: str) -> dict[str, Any] | None:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                issuer=self.user_pool_url,
                options={"verify_exp": False},
            )
        except jwt.PyJWTError:
            return None
        return claims

    def check_token(self, token: str) -> bool:
        """For the simulator's `token_check`: an id token this pool issued, not expired and
        not revoked."""
        claims = self._claims(token)
        if claims is None or claims.get("token_use") != "id":
            return False
        with self._lock:
            if claims.get("jti") not in self._valid_ids:
                return False
        return float(claims["exp"]) + self.api_leeway_s > time.time()

    def revoke_id_tokens(self) -> None:
        """The API stops accepting every id token issued so far (401), though their `exp` has
        not passed: what a client sees when Emporia's side expires a session early."""
        with self._lock:
            self._valid_ids.clear()

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far is refused (a password change, a sign-out)."""
        with self._lock:
            self._refresh.clear()

    def _fail_if_failing(self) -> None:
        """Raise what botocore raises when Cognito answers `failing_status` to InitiateAuth:
        a body that is no JSON error (a gateway's page) gives the status as the error code
        and its reason phrase as the message; its retries are spent (legacy mode: 4)."""
        with self._lock:
            status = self.failing_status
            if status is None:
                return
            self.failed_calls += 1
        raise ClientError(
            {
                "Error": {"Code": str(status), "Message": http.client.responses.get(status, "")},
                "ResponseMetadata": {
                    "HTTPStatusCode": status,
                    "HTTPHeaders": {"content-type": "text/html"},
                    "MaxAttemptsReached": True,
                    "RetryAttempts": 4,
                },
            },
            "InitiateAuth",
        )

    # -- pycognito's Cognito, as pyemvue uses it -----------------------------------------------

    def cognito_class(self) -> type:
        """A class to put in place of `pyemvue.auth.Cognito`."""
        standin = self

        class StandInCognito:
            client = _Client()

            def __init__(
                self,
                user_pool_id: str,
                client_id: str,
                user_pool_region: str | None = None,
                username: str | None = None,
                id_token: str | None = None,
                access_token: str | None = None,
                refresh_token: str | None = None,
                **_other: Any,
            ) -> None:
                self.user_pool_id = user_pool_id
                self.client_id = client_id
                self.username = username
                self.id_token = id_token
                self.access_token = access_token
                self.refresh_token = refresh_token
                self.token_type: str | None = None

            @property
            def user_pool_url(self) -> str:
                return standin.user_pool_url

            def authenticate(self, password: str) -> None:
                standin._fail_if_failing()
                email = (self.username or "").lower()
                with standin._lock:
                    known = standin.users.get(email)
                    if known is None or known != password:
                        standin.refused_logins += 1
                        raise NotAuthorizedException(
                            "An error occurred (NotAuthorizedException) when calling the "
                            "InitiateAuth operation: Incorrect username or password."
                        )
                    standin.password_logins += 1
                    refresh = secrets.token_urlsafe(32)
                    standin._refresh[refresh] = email
                self.access_token, self.id_token = standin._issue(email)
                self.refresh_token = refresh
                self.token_type = "Bearer"

            def renew_access_token(self) -> None:
                standin._fail_if_failing()
                with standin._lock:
                    email = standin._refresh.get(self.refresh_token or "")
                    if email is None:
                        standin.refused_renewals += 1
                        raise NotAuthorizedException(
                            "An error occurred (NotAuthorizedException) when calling the "
                            "InitiateAuth operation: Refresh Token has been revoked"
                        )
                    standin.renewals += 1
                self.access_token, self.id_token = standin._issue(email)
                self.token_type = "Bearer"

            def get_user(self) -> _User:
                claims = standin._claims(self.access_token or "")
                if claims is None:
                    raise NotAuthorizedException("Invalid Access Token")
                return _User({"email": str(claims["email"])})

        return StandInCognito


@contextmanager
def patch_pyemvue(standin: CognitoStandIn, api_root: str) -> Iterator[None]:
    """Point pyemvue's Cognito, JWKS URL and API root at the stand-in and the simulator,
    restoring them afterwards. Nothing else in pyemvue is touched."""
    import pyemvue.auth
    import pyemvue.pyemvue

    saved = (pyemvue.auth.Cognito, pyemvue.auth.USER_POOL_URL, pyemvue.pyemvue.API_ROOT)
    pyemvue.auth.Cognito = standin.cognito_class()
    pyemvue.auth.USER_POOL_URL = standin.user_pool_url
    pyemvue.pyemvue.API_ROOT = api_root
    try:
        yield
    finally:
        pyemvue.auth.Cognito, pyemvue.auth.USER_POOL_URL, pyemvue.pyemvue.API_ROOT = saved
