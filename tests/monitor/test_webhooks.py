"""Alert webhooks: the URL checks that keep them from reaching into the network, and real deliveries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopml.errors import ArgumentError
from loopml.monitor.webhooks import Delivery, check_webhook_url, send_webhook


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://localhost/hook", "loopback"),
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://127.1/hook", "loopback"),  # short form of 127.0.0.1
        ("http://2130706433/hook", "loopback"),  # 127.0.0.1 as one number
        ("http://0x7f000001/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "IPv6 wrapper of 127.0.0.1"),
        ("http://[64:ff9b::7f00:1]/hook", "IPv6 wrapper of 127.0.0.1"),  # NAT64
        ("http://169.254.169.254/latest/meta-data/", "link-local"),  # AWS, GCP, Azure metadata
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "private"),  # AWS metadata over IPv6
        ("http://100.100.100.200/latest/meta-data/", "not globally routable"),  # Alibaba metadata
        ("http://10.0.0.5/hook", "private"),
        ("http://172.16.3.4/hook", "private"),
        ("http://192.168.1.1/hook", "private"),
        ("http://0.0.0.0:8080/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://192.0.2.10/hook", "private"),  # TEST-NET-1: Python counts documentation ranges as private
    ],
)
def test_addresses_that_are_not_public_are_refused(url: str, says: str) -> None:
    with pytest.raises(ArgumentError, match=f"should be a webhook on a public address;.*{says}.*allow=") as info:
        check_webhook_url(url)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///etc/passwd", "http:// or https://"),
        ("ftp://example.com/x", "http:// or https://"),
        ("gopher://127.0.0.1:25/x", "http:// or https://"),
        ("//example.com/hook", "http:// or https://"),
        ("http:///hook", "should name a host"),
        ("http://user:secret@example.com/hook", "credentials"),
        ("http://example.com/a b", "no spaces or control characters"),
        ("http://example.com/\r\nX-Injected: 1", "no spaces or control characters"),
        ("http://example.com:99999/hook", "port from 1 to 65535"),
        ("http://no-such-host.invalid/hook", "resolves"),
    ],
)
def test_malformed_urls_are_refused_with_what_to_pass(url: str, says: str) -> None:
    with pytest.raises(ArgumentError, match=says):
        check_webhook_url(url)


def test_allow_opens_a_host_or_a_network_on_purpose() -> None:
    assert check_webhook_url("http://127.0.0.1:9/hook", allow=["127.0.0.1"]) == "http://127.0.0.1:9/hook"
    assert check_webhook_url("http://localhost:9/hook", allow=["localhost"])
    assert check_webhook_url("http://10.1.2.3/hook", allow=["10.0.0.0/8"])
    with pytest.raises(ArgumentError, match="private"):
        check_webhook_url("http://192.168.0.1/hook", allow=["10.0.0.0/8"])  # another network stays closed
    with pytest.raises(TypeError, match="Argument allow should be a list"):
        check_webhook_url("http://10.1.2.3/hook", allow="10.0.0.0/8")  # type: ignore[arg-type]


class _Receiver:
    """A real HTTP server on 127.0.0.1 that records what it received and answers as told."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        self.location = ""
        self.release = threading.Event()
        self.stall = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append((self.path, dict(self.headers), body))
                if receiver.stall:
                    receiver.release.wait(30)  # holds the answer until the test releases it
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_a_delivery_posts_the_json_to_an_allowed_receiver(receiver: _Receiver) -> None:
    result = send_webhook(receiver.url("/hook?team=vision"), {"alert": "drift", "version": "digits/3", "p": 0.001},
                          allow=["127.0.0.1"])
    assert result == Delivery(receiver.url("/hook?team=vision"), True, 200, None)
    path, headers, body = receiver.received[0]
    assert path == "/hook?team=vision"
    assert json.loads(body) == {"alert": "drift", "version": "digits/3", "p": 0.001}
    assert headers["Content-Type"] == "application/json" and headers["Host"] == f"127.0.0.1:{receiver.port}"


def test_a_receiver_on_loopback_is_refused_before_anything_is_sent(receiver: _Receiver) -> None:
    with pytest.raises(ArgumentError, match="loopback"):
        send_webhook(receiver.url(), {"alert": "x"})
    assert receiver.received == []


def test_a_redirect_is_not_followed(receiver: _Receiver) -> None:
    # the receiver tries to bounce the request to the metadata address: loopml reports it and goes nowhere
    target = _Receiver()
    try:
        receiver.status, receiver.location = 302, target.url("/latest/meta-data/")
        result = send_webhook(receiver.url(), {"alert": "x"}, allow=["127.0.0.1"])
        assert not result.ok and result.status == 302
        assert "redirect" in (result.error or "") and "follows none" in (result.error or "")
        assert len(receiver.received) == 1 and target.received == []
    finally:
        target.close()


def test_a_receiver_that_does_not_answer_times_out(receiver: _Receiver) -> None:
    receiver.stall = True
    result = send_webhook(receiver.url(), {"alert": "x"}, allow=["127.0.0.1"], timeout=0.3)
    assert result.ok is False and result.status is None and "no answer within 0.3 s" in (result.error or "")


def test_an_error_status_and_a_closed_port_are_reported_not_raised(receiver: _Receiver) -> None:
    receiver.status = 500
    result = send_webhook(receiver.url(), {"alert": "x"}, allow=["127.0.0.1"])
    assert (result.ok, result.status, result.error) == (False, 500, "the receiver answered HTTP 500")
    port = receiver.port
    receiver.close()
    closed = send_webhook(f"http://127.0.0.1:{port}/hook", {"alert": "x"}, allow=["127.0.0.1"], timeout=2)
    assert closed.ok is False and closed.status is None and "ConnectError" in (closed.error or "")


@pytest.mark.parametrize("timeout", [0, -1, 61, True, "5"])
def test_a_bad_timeout_is_refused(timeout: object) -> None:
    with pytest.raises(ArgumentError, match="Argument timeout should be a number of seconds"):
        send_webhook("http://127.0.0.1:9/hook", {}, allow=["127.0.0.1"], timeout=timeout)  # type: ignore[arg-type]
