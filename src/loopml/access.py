"""Who may talk to a loopml server: the Host allow-list and the bearer token, without a web framework.

Both servers call these: the tracking server (FastAPI, through
:class:`loopml.server.security.SecurityMiddleware`) and the model server
(``loopml serve``, its own HTTP layer), so the two answer the same Host
headers and tokens. Nothing here imports Starlette or FastAPI: the model
server starts without the tracking server's web stack (importing it cost
~0.5 s of a start-up whose goal is 1.5 s). Example::

    from loopml.access import HostAllowList, bearer_ok, read_token_file

    hosts = HostAllowList(["tracking.internal:5000"])
    hosts.allows("localhost:8080"), hosts.allows("evil.example")    # (True, False)
    bearer_ok("Bearer s3cret", b"s3cret")                            # True
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from pathlib import Path

from .errors import ArgumentError, ArgumentTypeError, ConfigError

__all__ = ["LOOPBACK_HOSTS", "HostAllowList", "bearer_ok", "check_allowed_hosts", "is_loopback", "parse_host",
           "read_token_file"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_PORT = re.compile(r"^[0-9]{1,5}$")


def parse_host(value: str) -> tuple[str, int | None] | None:
    """Split a Host header (``name``, ``name:port``, ``[v6]:port``) into a lower-case name and port.

    Returns None for a value that is not a host.

    >>> parse_host("[::1]:5000")
    ('::1', 5000)
    >>> parse_host("LocalHost")
    ('localhost', None)
    >>> parse_host("a/b") is None
    True
    """
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, port = value.split(":")
    elif ":" in value:  # a bare IPv6 address is not a valid Host header
        return None
    else:
        name, port = value, None
    if not name or any(c in name for c in "/@ \\?#"):
        return None
    if port is None:
        return name, None
    if not _PORT.match(port) or int(port) > 65535:
        return None
    return name, int(port)


def check_allowed_hosts(allowed_hosts: Sequence[str]) -> set[tuple[str, int | None]]:
    """The parsed ``allowed_hosts`` (``*`` left out); raises ValueError on an entry that is not a host.

    >>> sorted(check_allowed_hosts(["a.internal", "b.internal:5000", "*"]))
    [('a.internal', None), ('b.internal', 5000)]
    """
    if isinstance(allowed_hosts, str):
        raise ArgumentTypeError(f"Argument allowed_hosts should be a list of host names, got the string {allowed_hosts!r}")
    parsed_hosts = set()
    for entry in allowed_hosts:
        if entry == "*":
            continue
        parsed = parse_host(entry) if isinstance(entry, str) else None
        if parsed is None:
            raise ArgumentError(
                "Argument allowed_hosts should hold host names such as 'tracking.internal' or "
                f"'tracking.internal:5000' (or '*' for any), got {entry!r}"
            )
        parsed_hosts.add(parsed)
    return parsed_hosts


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
    (True, False)
    """
    return host.strip("[]").lower() in LOOPBACK_HOSTS or host.startswith("127.")


class HostAllowList:
    """The Host headers a server answers: loopback names (any port) plus ``allowed_hosts``.

    An entry ``name`` allows any port, ``name:port`` one port, ``*`` any Host
    header at all (the check is off). This is the defence against DNS
    rebinding (see :mod:`loopml.server.security`).

    >>> hosts = HostAllowList(["tracking.internal:5000"])
    >>> hosts.allows("127.0.0.1:8080"), hosts.allows("tracking.internal:5000"), hosts.allows("tracking.internal")
    (True, True, False)
    """

    def __init__(self, allowed_hosts: Sequence[str] = ()) -> None:
        self.any = "*" in allowed_hosts
        self._hosts = {(h, None) for h in LOOPBACK_HOSTS} | check_allowed_hosts(allowed_hosts)

    def allows(self, value: str | None) -> bool:
        """Whether a request with this Host header (None: none sent) is answered."""
        if self.any:
            return True
        parsed = parse_host(value) if value else None
        if parsed is None:
            return False
        return parsed in self._hosts or (parsed[0], None) in self._hosts


def bearer_ok(header: str | bytes | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (compared in constant time).

    >>> bearer_ok(b"Bearer s3cret", b"s3cret"), bearer_ok("bearer s3cret", b"s3cret"), bearer_ok(None, b"s3cret")
    (True, True, False)
    """
    if not header:
        return False
    raw = header.encode("latin-1") if isinstance(header, str) else header
    scheme, _, given = raw.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), token)


def read_token_file(path: str | Path) -> str:
    """The bearer token on the first line of ``path``; :class:`~loopml.errors.ConfigError` when unreadable or empty.

    >>> from pathlib import Path
    >>> _ = Path("token").write_text("s3cret")
    >>> read_token_file("token")
    's3cret'
    """
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"Cannot read the auth token file {str(path)!r}: {exc.strerror or exc}") from exc
    if not token:
        raise ConfigError(f"The auth token file {str(path)!r} is empty; put the token on its first line")
    return token
