"""A webhook receiver for the tests: an HTTP server in a process of its own on loopback that
records every request (headers and body bytes) and answers as its path says, and a hand-written
Standard Webhooks verifier, independent of the ``standardwebhooks`` library the service signs
with.

Paths: ``/<name>/ok``; ``/<name>/fail/<n>`` (the first n requests get a 500, then 200);
``/<name>/slow/<n>`` (the first n wait 3 s before answering 200); ``/<name>/gone`` (410);
``/<name>/redirect`` (307 to ``/<name>/ok``). With a certificate and its key it speaks HTTPS
and records the server name each connection asked for (SNI). Run:
``python -m tests.webhook_receiver PORT LOG [CERT KEY]``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.stacks import REPO, wait_for

TOLERANCE_S = 300  # the spec's suggested window for webhook-timestamp


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether one of the ``webhook-signature`` entries is the HMAC-SHA256 of
    ``{id}.{timestamp}.{body}`` under `secret` (``whsec_<base64>``), as the spec defines it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    if abs(time.time() - int(headers["webhook-timestamp"])) > TOLERANCE_S:
        return False
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s, expected) for s in headers["webhook-signature"].split(" "))


class Receiver:
    """The receiver process on `port`, its requests read back from its log."""

    def __init__(self, port: int, log: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.port = port
        self.log = log
        self.tls = tls  # (certificate, key): HTTPS
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def start(self) -> Receiver:
        tls = [str(p) for p in self.tls] if self.tls else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.webhook_receiver", str(self.port), str(self.log), *tls],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_for(up, 30, "the webhook receiver to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def requests(self, path_prefix: str = "") -> list[dict[str, Any]]:
        """Every request recorded so far (of paths under `path_prefix`), in arrival order;
        ``body`` as bytes."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            entry = json.loads(line)
            if entry["path"].startswith(path_prefix):
                entry["body"] = base64.b64decode(entry["body"])
                found.append(entry)
        return found

    def wait_for(self, path_prefix: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        return wait_for(
            lambda: (lambda r: r if len(r) >= count else None)(self.requests(path_prefix)),
            timeout,
            f"{count} requests to {path_prefix}",
        )


# --- the server process --------------------------------------------------------------------


def serve(port: int, log: Path, tls: tuple[str, str] | None = None) -> None:
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                seen[self.path] += 1
                nth = seen[self.path]
                entry = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "sni": getattr(self.connection, "sni", None),
                    "body": base64.b64encode(body).decode(),
                }
                with log.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
            parts = self.path.strip("/").split("/")
            mode = parts[1] if len(parts) > 1 else "ok"
            n = int(parts[2]) if len(parts) > 2 else 0
            if mode == "slow" and nth <= n:
                time.sleep(3)
            if mode == "fail" and nth <= n:
                self._answer(500)
            elif mode == "gone":
                self._answer(410)
            elif mode == "redirect":
                self._answer(307, {"location": f"/{parts[0]}/ok"})
            else:
                self._answer(200)

        def _answer(self, code: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)

        def remember_sni(conn: Any, name: str | None, _: ssl.SSLContext) -> None:
            conn.sni = name  # the accepted SSLSocket, read back by the handler

        context.sni_callback = remember_sni
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    cert_and_key = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else None
    serve(int(sys.argv[1]), Path(sys.argv[2]), cert_and_key)
