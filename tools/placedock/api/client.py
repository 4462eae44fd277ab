"""Talk to placement's API: one client for the tools that load data through the
front door (the upgrade rehearsal's data set, the modelling scenarios)."""

import email.utils
import threading
import time

import requests
import urllib3

TIMEOUT = 30
# Methods that change nothing: sent again whatever went wrong.
READS = frozenset({"GET", "HEAD"})
# Answers after which a request may have reached a replica and been applied:
# haproxy's 502 (the replica's answer was lost) and 504 (none in time).
IN_DOUBT = frozenset({502, 504})
# Seconds before the next try when no Retry-After says; the most waited once.
BACKOFF = (0.5, 1.0, 2.0)
MAX_WAIT = 60.0


class ApiError(RuntimeError):
    """A request placement answered with an unexpected status; the message is
    one line with the method, the path, the status and placement's detail."""

    def __init__(self, method, path, resp):
        self.status = resp.status_code
        super().__init__(f"{method} {path}: {resp.status_code} {detail(resp)}")


class OutcomeUnknown(ApiError):
    """A write whose first try may have been applied, not sent again: the
    message says what happened and that the caller must read to learn."""

    def __init__(self, method, path, what):
        self.status = None
        RuntimeError.__init__(
            self,
            f"{method} {path}: {what}: the outcome is unknown (it may have been applied); "
            "not sent again: read the resource to learn it",
        )


def detail(resp):
    """Placement's own words for an error response (its JSON errors list), else the body's start."""
    try:
        errors = resp.json()["errors"]
        return "; ".join(" ".join(e.get("detail", e.get("title", "")).split()) for e in errors)
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def retry_after(resp, most=MAX_WAIT):
    """The seconds a response's Retry-After asks for (delta-seconds or an
    HTTP date), at most `most`; None without a usable one."""
    value = resp.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), most)


def nothing_sent(exc):
    """Whether a failed request never reached the server: the connection was
    refused or not made in time, so no byte of the request was sent."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps it
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


class Client:
    """requests against the front door, one session per thread.

    Sent again, after the response's Retry-After or a short backoff, up to
    `retries` times:
    - any method whose connection was refused or not made: nothing was sent;
    - any method answered 503: placement's "the database (or keystone) is not
      available now, try again" and haproxy's "no replica is up". A write
      placement answers 503 was not applied, except in the rare case that
      the database's connection broke during its commit: placement's writes
      carry generations (or name a new uuid), so a resend of one that did
      commit answers 409 and is never applied twice;
    - GET and HEAD after anything else that went wrong (502, 504, a dropped
      connection, a read timeout): they change nothing.

    A write that got 502, 504, a dropped connection or no answer in time may
    have been applied, and is never sent again blindly:
    - DELETE is re-read: a GET of the same path answering 404 means it is
      gone, whatever the first try did, and that 404 is the answer; any other
      answer raises OutcomeUnknown (the first try may still be running);
    - PUT, POST and PATCH raise OutcomeUnknown. Placement's writes are
      conditional on generations: a resend of one that committed answers
      409, as if it had failed, and a re-read cannot tell our write from
      another writer's. Only the caller knows what to check.
    """

    def __init__(self, url, headers, retries=3, sleep=None):
        self.url = url.rstrip("/")
        self.headers = headers
        self.retries = retries
        self.sleep = sleep or time.sleep
        self.local = threading.local()

    def session(self):
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers.update(self.headers)
        return self.local.session

    def pause(self, attempt, resp=None):
        wait = retry_after(resp) if resp is not None else None
        self.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)] if wait is None else wait)

    def request(self, method, path, body=None, params=None, headers=None):
        """The response, after the retries above; any status. OutcomeUnknown
        for a write that may have been applied."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self.session().request(
                    method, self.url + path, json=body, params=params, headers=headers, timeout=TIMEOUT
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if not (nothing_sent(exc) or method in READS):
                    return self.in_doubt(method, path, params, headers, f"no answer ({type(exc).__name__})")
                if last:
                    raise
                self.pause(attempt)
                continue
            if resp.status_code in IN_DOUBT and method not in READS:
                return self.in_doubt(method, path, params, headers, f"{resp.status_code} {detail(resp)}")
            if last or not (resp.status_code == 503 or (resp.status_code in IN_DOUBT and method in READS)):
                return resp
            self.pause(attempt, resp)
        return resp

    def in_doubt(self, method, path, params, headers, what):
        """A write that may have been applied: a DELETE's outcome read back, else OutcomeUnknown."""
        if method == "DELETE":
            check = self.request("GET", path, params=params, headers=headers)
            if check.status_code == 404:
                return check
            raise OutcomeUnknown(method, path, f"{what}; a GET of it then answered {check.status_code}")
        raise OutcomeUnknown(method, path, what)

    def call(self, method, path, body=None, expect=(200,), params=None, headers=None):
        """The decoded body of a response with an expected status; ApiError otherwise."""
        resp = self.request(method, path, body, params, headers)
        if resp.status_code not in expect:
            raise ApiError(method, path, resp)
        return resp.json() if resp.content else None


def wait_ready(url, timeout, alive=lambda: True):
    """Wait until GET url/ answers 200; return the seconds it took.

    `alive` says whether the server is still worth waiting for (a process that exited is not).
    """
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        if not alive():
            raise RuntimeError(f"{url}: the server exited")
        try:
            resp = requests.get(url + "/", timeout=2)
            if resp.status_code == 200:
                return time.monotonic() - start
            last = resp.status_code
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:g}s (last: {last})")
