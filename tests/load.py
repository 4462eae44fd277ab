"""A bounded background load through the front door, for the tests that
change the stack while it serves."""

import threading
import time

import requests


class Load(threading.Thread):
    """GETs in a loop until stopped (or `limit_seconds`), recording every
    response time and every failure with the moment it happened."""

    def __init__(self, url, headers, paths=("/",), limit_seconds=180, pause=0.02, timeout=20):
        super().__init__(daemon=True)
        self.url = url
        self.headers = headers
        self.paths = paths
        self.limit = limit_seconds
        self.pause = pause
        self.timeout = timeout
        self.stop = threading.Event()
        self.sent = 0
        self.failures = []  # (monotonic time, path, what)
        self.slowest = 0.0

    def run(self):
        deadline = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < deadline:
            path = self.paths[self.sent % len(self.paths)]
            self.sent += 1
            started = time.monotonic()
            try:
                resp = requests.get(self.url + path, headers=self.headers, timeout=self.timeout)
                if resp.status_code != 200:
                    self.failures.append((time.monotonic(), path, f"{resp.status_code} {resp.text[:200]}"))
            except requests.RequestException as exc:
                self.failures.append((time.monotonic(), path, repr(exc)))
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(self.pause)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()
