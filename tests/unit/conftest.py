"""A scripted HTTP server on the loopback, for the unit tests of the tools'
clients (no stack)."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Scripted(ThreadingHTTPServer):
    """Answers each request with the next step of `script`: a status (and
    headers, and a JSON body), "drop" (read the request, close without an answer) or "hang"
    (no answer until the test ends). Records (method, path, monotonic time)."""

    daemon_threads = True

    def __init__(self, script, port=0):
        self.script = list(script)
        self.seen = []
        self.done = threading.Event()
        super().__init__(("127.0.0.1", port), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self):
        return [(method, path) for method, path, _ in self.seen]

    def close(self):
        self.done.set()
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path, time.monotonic()))
        step = self.server.script.pop(0)
        if step == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if step == "hang":
            self.server.done.wait()
            self.close_connection = True
            return
        status, headers, body = (*step, None)[:3] if isinstance(step, tuple) else (step, {}, None)
        if body is None:
            body = {"errors": [{"detail": "scripted"}]} if status >= 400 else {}
        body = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if status != 204 else 0))
        self.end_headers()
        if status != 204:
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = answer

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(*script, port=0):
        servers.append(Scripted(script, port))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
