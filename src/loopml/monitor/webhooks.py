"""Alert webhooks: POST a JSON document to a URL a user configured, without becoming a way into the network.

A webhook URL is user input that the monitoring process fetches on its own, so it
is the classic server-side request forgery door (the class of MLflow's
CVE-2026-2393). :func:`check_webhook_url` refuses, unless allowed explicitly:

- a scheme other than ``http`` or ``https``, a URL without a host, credentials,
  control characters or whitespace;
- a host that resolves to any address that is not globally routable: loopback
  (``127.0.0.0/8``, ``::1``, ``localhost``, also written ``127.1`` or ``2130706433``),
  private (``10/8``, ``172.16/12``, ``192.168/16``, ``fc00::/7``), link-local
  (``169.254.0.0/16``, the cloud metadata address ``169.254.169.254``, ``fe80::/10``),
  shared (``100.64.0.0/10``, Alibaba's ``100.100.100.200``), unspecified, reserved
  or documentation ranges, and IPv4 addresses wrapped in IPv6 (``::ffff:127.0.0.1``,
  NAT64 ``64:ff9b::/96``, 6to4, Teredo).

:func:`send_webhook` checks again, connects to the address it checked (so a DNS
answer that changes between the check and the connection cannot redirect it),
follows no redirects and gives up after ``timeout`` seconds. It never raises for a
delivery that failed: it returns a :class:`Delivery` that says what happened, so an
alert that cannot be sent never stops the monitor.

``allow`` opens the door on purpose for an internal receiver (an Alertmanager on
the LAN, a test server on 127.0.0.1): host names, addresses or networks in CIDR
form, e.g. ``allow=["alerts.internal", "10.0.0.0/8"]``.

>>> check_webhook_url("http://169.254.169.254/latest/meta-data")
Traceback (most recent call last):
...
loopml.errors.ArgumentError: Argument url should be a webhook on a public address; 169.254.169.254 is link-local (cloud metadata and autoconfiguration live there). To send to it anyway, allow it: allow=['169.254.169.254']
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["Delivery", "check_webhook_url", "send_webhook"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Delivery:
    """What happened to one webhook POST: ``ok`` when the receiver answered 2xx."""

    url: str
    ok: bool
    status: int | None = None
    error: str | None = None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    return None


def _why_not_public(ip: IPAddress) -> str | None:
    """None for a globally routable address, else what it is."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        why = _why_not_public(inner)
        return f"an IPv6 wrapper of {inner}, which is {why}" if why else None
    if ip.is_loopback:
        return "loopback (this machine)"
    if ip.is_link_local:
        return "link-local (cloud metadata and autoconfiguration live there)"
    if ip.is_unspecified:
        return "unspecified (it reaches this machine)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private (a local network)"
    if not ip.is_global:
        return "not globally routable (shared, reserved or documentation range)"
    return None


def _allowed(host: str, ips: Sequence[IPAddress], allow: Sequence[str]) -> bool:
    for entry in allow:
        if entry.strip().lower().rstrip(".") == host:
            return True
        try:
            net = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            continue
        if ips and all(ip in net for ip in ips):
            return True
    return False


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ArgumentError(f"Argument url should name a host that resolves; {host!r} does not ({exc})") from None
    out: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def _check(url: str, allow: Sequence[str]) -> tuple[str, str, int, list[IPAddress]]:
    if not isinstance(url, str):
        raise ArgumentTypeError(f"Argument url should be a string like 'https://hooks.example.com/loopml'; got {type(url).__name__}")
    if isinstance(allow, str) or not all(isinstance(a, str) for a in allow):
        raise ArgumentTypeError(f"Argument allow should be a list of host names or networks, e.g. ['10.0.0.0/8']; got {allow!r}")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ArgumentError(f"Argument url should hold no spaces or control characters; got {url!r}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ArgumentError(f"Argument url should be an http:// or https:// URL; got scheme {parts.scheme or 'none'!r} in {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ArgumentError("Argument url should not carry credentials (user:password@); put a token in the path or query")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise ArgumentError(f"Argument url should name a host, e.g. https://hooks.example.com/loopml; got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise ArgumentError(f"Argument url should have a port from 1 to 65535; got {url!r}") from None
    ips = _resolve(host, port)
    if not _allowed(host, ips, allow):
        for ip in ips:
            why = _why_not_public(ip)
            if why is not None:
                shown = host if host == str(ip) else f"{host} ({ip})"
                raise ArgumentError(
                    f"Argument url should be a webhook on a public address; {shown} is {why}. "
                    f"To send to it anyway, allow it: allow=[{host!r}]"
                )
    return parts.scheme.lower(), host, port, ips


def check_webhook_url(url: str, *, allow: Sequence[str] = ()) -> str:
    """Return ``url`` if loopml may POST alerts to it; else raise :class:`~loopml.errors.ArgumentError` saying why.

    Checked when an alert rule is saved, and again before every delivery.
    """
    _check(url, allow)
    return url


def send_webhook(url: str, payload: Mapping[str, Any], *, timeout: float = 5.0, allow: Sequence[str] = ()) -> Delivery:
    """POST ``payload`` as JSON to ``url``; never follows a redirect, never raises for a failed delivery.

    The URL is checked (:func:`check_webhook_url`) and the connection goes to the
    address that was checked, with the URL's host name in ``Host`` and, for https,
    in TLS (SNI and the certificate's name).
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise ArgumentError(f"Argument timeout should be a number of seconds above 0 and at most 60; got {timeout!r}")
    scheme, host, port, ips = _check(url, allow)
    ip = ips[0]
    parts = urlsplit(url)
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    pinned = urlunsplit((scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
    default_port = port == (443 if scheme == "https" else 80)
    headers = {"Host": host if default_port else f"{host}:{port}", "Content-Type": "application/json",
               "User-Agent": "loopml-alerts"}
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    try:
        body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:
        raise ArgumentError(f"Argument payload should be JSON-serialisable: {exc}") from None
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            answer = client.post(pinned, content=body, headers=headers, extensions=extensions)
    except httpx.TimeoutException:
        return Delivery(url, False, None, f"no answer within {timeout} s")
    except httpx.HTTPError as exc:
        return Delivery(url, False, None, f"{type(exc).__name__}: {exc}")
    if answer.is_redirect:
        target = answer.headers.get("location", "?")
        return Delivery(url, False, answer.status_code, f"the receiver answered a redirect to {target}; loopml follows none")
    if not answer.is_success:
        return Delivery(url, False, answer.status_code, f"the receiver answered HTTP {answer.status_code}")
    return Delivery(url, True, answer.status_code, None)
