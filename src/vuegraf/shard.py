"""Which of the config's accounts this replica collects, when several share one config.

`--shard I/N` (or `VUEGRAF_SHARD=I/N`, so a Kubernetes StatefulSet can set it from the pod's
ordinal) makes this process replica I of N. An account belongs to the replica whose index is
a stable hash of its name modulo N, so:

- every account is collected by exactly one of the N replicas, whatever the others do;
- the owner depends on the name alone, not on where the account sits in the file: adding or
  removing an account moves no other account to another replica;
- the hash is SHA-256, not Python's `hash()`, which is salted per process and would give
  each replica a different answer.

Changing N moves about (N-1)/N of the accounts; each new owner's gap backfill reads the store
and fills whatever the old one left.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

SHARD_ENV = "VUEGRAF_SHARD"
SHARD_FLAG = "--shard"

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    """A shard value that cannot be used; the message names where it came from."""


class _Named(Protocol):
    @property
    def name(self) -> str: ...


NamedT = TypeVar("NamedT", bound=_Named)


def owner(name: str, count: int) -> int:
    """The replica (0..count-1) that collects the account called `name`."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Replica `index` of `count`; `Shard(0, 1)` (`WHOLE`) is a process that collects all."""

    index: int = 0
    count: int = 1
    source: str = SHARD_FLAG  # where the value came from, for messages

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"{self.source}: {self.index}/{self.count} is not I/N with 0 <= I < N")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def file_suffix(self) -> str:
        """Added to the names of per-process state files (the retry queue, the health file),
        so replicas that share a state directory never share one. Empty when not sharded:
        a single process keeps the names it always had."""
        return f"-shard-{self.index}-of-{self.count}" if self.sharded else ""

    def owns(self, name: str) -> bool:
        return owner(name, self.count) == self.index

    def owned(self, accounts: Sequence[NamedT]) -> list[NamedT]:
        """The accounts of `accounts` this replica collects, in their order."""
        return [a for a in accounts if self.owns(a.name)]


WHOLE = Shard()


def parse_shard(text: str, source: str = SHARD_FLAG) -> Shard:
    """`I/N` as a Shard; ShardError (naming `source`) for anything else."""
    m = _SHARD.match(text)
    if m is None:
        raise ShardError(f"{source}: {text!r} is not I/N (e.g. 0/3: replica 0 of 3)")
    return Shard(int(m.group(1)), int(m.group(2)), source)


def resolve_shard(flag: str | None, environ: Mapping[str, str]) -> Shard:
    """The flag when given, else `VUEGRAF_SHARD` when set and not empty, else `WHOLE`."""
    if flag is not None:
        return parse_shard(flag, SHARD_FLAG)
    text = environ.get(SHARD_ENV, "")
    if text.strip():
        return parse_shard(text, SHARD_ENV)
    return WHOLE
