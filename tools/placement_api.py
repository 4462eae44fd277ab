"""Talk to placement's API: one client for the tools that load data through the
front door (the upgrade rehearsal's data set, the modelling scenarios)."""

import threading

import requests

TIMEOUT = 30


class ApiError(RuntimeError):
    """A request placement answered with an unexpected status; the message is
    one line with the method, the path, the status and placement's detail."""

    def __init__(self, method, path, resp):
        self.status = resp.status_code
        super().__init__(f"{method} {path}: {resp.status_code} {detail(resp)}")


def detail(resp):
    """Placement's own words for an error response (its JSON errors list), else the body's start."""
    try:
        errors = resp.json()["errors"]
        return "; ".join(" ".join(e.get("detail", e.get("title", "")).split()) for e in errors)
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


class Client:
    """requests against the front door, one session per thread; a 5xx or a
    dropped connection on an idempotent request is tried again."""

    def __init__(self, url, headers, retries=3):
        self.url = url.rstrip("/")
        self.headers = headers
        self.retries = retries
        self.local = threading.local()

    def session(self):
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers.update(self.headers)
        return self.local.session

    def request(self, method, path, body=None, params=None, headers=None):
        """The response, after the retries; any status."""
        attempts = self.retries + 1 if method in ("GET", "PUT", "DELETE") else 1
        for attempt in range(attempts):
            try:
                resp = self.session().request(
                    method, self.url + path, json=body, params=params, headers=headers, timeout=TIMEOUT
                )
            except requests.ConnectionError:
                if attempt + 1 == attempts:
                    raise
                continue
            if resp.status_code < 500:
                break
        return resp

    def call(self, method, path, body=None, expect=(200,), params=None, headers=None):
        """The decoded body of a response with an expected status; ApiError otherwise."""
        resp = self.request(method, path, body, params, headers)
        if resp.status_code not in expect:
            raise ApiError(method, path, resp)
        return resp.json() if resp.content else None
