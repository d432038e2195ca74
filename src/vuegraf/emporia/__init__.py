"""The only package that talks to pyemvue (Emporia's cloud API).

`session` logs in and sends, counts and rate-limits every request; `catalog` knows the
devices and turns Emporia's answers into `Point`s; `limits` says how far back and how much
Emporia serves; `errors` are what every failure becomes. `EmporiaAccount` puts one session
and one catalogue together for a configured account. The names below are the ones the rest
of vuegraf imports, so callers need not know which module holds what.
"""

from vuegraf.emporia.account import EmporiaAccount
from vuegraf.emporia.errors import (
    EmporiaApiChanged,
    EmporiaAuthFailed,
    EmporiaDown,
    EmporiaError,
    EmporiaLoginChallenge,
    EmporiaRateLimited,
    EmporiaServerError,
    EmporiaSessionExpired,
    EmporiaStopped,
    EmporiaUnreachable,
    PyemvueUnsupported,
    describe_unreachable,
    plainly,
    reason,
)
from vuegraf.emporia.session import (
    RELOGIN_AFTER_FAILURES,
    SUPPORTED_PYEMVUE,
    RateLimits,
    RetryPolicy,
    pyemvue_problem,
)

__all__ = [
    "RELOGIN_AFTER_FAILURES",
    "SUPPORTED_PYEMVUE",
    "EmporiaAccount",
    "EmporiaApiChanged",
    "EmporiaAuthFailed",
    "EmporiaDown",
    "EmporiaError",
    "EmporiaLoginChallenge",
    "EmporiaRateLimited",
    "EmporiaServerError",
    "EmporiaSessionExpired",
    "EmporiaStopped",
    "EmporiaUnreachable",
    "PyemvueUnsupported",
    "RateLimits",
    "RetryPolicy",
    "describe_unreachable",
    "plainly",
    "pyemvue_problem",
    "reason",
]
