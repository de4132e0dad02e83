"""A webhook goes to the address that was checked: a name that resolves elsewhere after the
check (DNS rebinding) is not followed, the connection is made to the resolved address under
the URL's hostname, and HTTPS verifies that hostname, not the address."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from app.api.services.webhook_delivery import CheckedTransport, Outcome, Outgoing, client_for, send
from app.core import webhooks
from app.core.config import Settings
from tests.clients import run_async
from tests.stacks import free_port
from tests.webhook_receiver import Receiver


class Names:
    """A resolver whose answers the test sets: per name, the addresses of each successive
    call (the last answer repeats); every call is recorded."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.answers[host]
        return answers[min(self.calls.count(host), len(answers)) - 1]


def send_once(url: str, transport: CheckedTransport) -> Outcome:
    """One attempt at a message to `url` through the deliverer's client on `transport`."""
    settings = Settings(webhook_timeout_s=5)
    out = Outgoing(0, "msg_pinned", url, '{"type":"test"}', (webhooks.new_secret(),))

    async def attempt() -> Outcome:
        async with client_for(settings, transport) as client:
            return await send(client, out, settings)

    return run_async(attempt())


def test_a_name_that_resolves_elsewhere_after_the_check_is_not_followed(
    receiver: Receiver,
) -> None:
    receiver.start()  # on 127.0.0.1 only: nothing listens on 127.0.0.2

    def check(host: str, addresses: list[str]) -> None:
        # the service's own check, with 127.0.0.2 standing in for a public address
        webhooks.check_addresses(host, [a for a in addresses if a != "127.0.0.2"])

    # public when resolved for the check, loopback when resolved again for the connection
    names = Names({"rebind.example": [["127.0.0.2"], ["127.0.0.1"]]})
    outcome = send_once(
        receiver.url("/rebind/ok", "rebind.example"), CheckedTransport(check, names)
    )
    assert outcome.status_code is None and outcome.retry, outcome
    assert outcome.error is not None and "ConnectError" in outcome.error, outcome
    assert names.calls == ["rebind.example"]  # resolved once: what was checked was connected to
    assert receiver.requests() == []

    # resolved to loopback right away: refused by name and address, not retried
    names = Names({"rebind.example": [["127.0.0.1"]]})
    outcome = send_once(
        receiver.url("/rebind/ok", "rebind.example"), CheckedTransport(check, names)
    )
    assert not outcome.retry and outcome.error is not None, outcome
    assert outcome.error.startswith("refused: host rebind.example is 127.0.0.1, a loopback")
    assert receiver.requests() == []


def test_a_delivery_goes_to_the_resolved_address_under_its_hostname(
    receiver: Receiver,
) -> None:
    receiver.start()
    names = Names({"hooks.example": [["127.0.0.1"]]})  # a name only this resolver knows
    outcome = send_once(receiver.url("/named/ok", "hooks.example"), CheckedTransport(None, names))
    assert outcome.status_code == 200 and outcome.error is None, outcome
    [request] = receiver.requests("/named/")
    assert request["headers"]["host"] == f"hooks.example:{receiver.port}"
    assert names.calls == ["hooks.example"]


def test_https_verifies_the_hostname_not_the_address(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=hooks.example", "-addext", "subjectAltName=DNS:hooks.example"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    receiver = Receiver(free_port(), tmp_path / "received.jsonl", tls=(cert, key)).start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        names = Names({"hooks.example": [["127.0.0.1"]], "other.example": [["127.0.0.1"]]})
        ok = send_once(
            receiver.url("/tls/ok", "hooks.example"), CheckedTransport(None, names, trust)
        )
        assert ok.status_code == 200, ok
        [request] = receiver.requests("/tls/")
        assert request["sni"] == "hooks.example"
        assert request["headers"]["host"] == f"hooks.example:{receiver.port}"

        # the same address under a name the certificate does not carry: refused by TLS
        other = receiver.url("/tls/ok", "other.example")
        mismatch = send_once(other, CheckedTransport(None, names, trust))
        assert mismatch.status_code is None and mismatch.error is not None, mismatch
        assert "CERTIFICATE_VERIFY_FAILED" in mismatch.error, mismatch.error
        assert len(receiver.requests("/tls/")) == 1
    finally:
        receiver.stop()
