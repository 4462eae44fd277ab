"""Bounded background load through the front door, for the tests that change
the stack while it serves: GETs (Load), allocation writes (Writer), and the
check that what the writers were told is what placement holds afterwards."""

import random
import threading
import time
import uuid
from collections import Counter

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


class Writer(threading.Thread):
    """Allocation writes for fresh consumers, then deletes of half of them.
    Records what the client was told, so the outcome can be checked."""

    SUCCESS = {200, 204}
    RETRYABLE = {409, 502, 503, 504}

    def __init__(self, url, headers, providers, seconds, project):
        super().__init__(daemon=True)
        self.url, self.headers, self.providers, self.seconds = url, headers, providers, seconds
        self.project = project
        self.written = {}  # consumer -> (provider, amount): the write succeeded
        self.unsure = {}  # consumer -> (provider, amount): retryable status, outcome unknown to the client
        self.deleted = set()  # the delete succeeded
        # The delete got a retryable status: it may have committed all the
        # same (a connection lost during COMMIT), so gone or still there exactly.
        self.maybe_deleted = set()
        self.statuses = Counter()
        self.bad = []
        self.stop = threading.Event()

    def request(self, method, path, **kwargs):
        try:
            resp = requests.request(method, self.url + path, headers=self.headers, timeout=20, **kwargs)
        except requests.RequestException as exc:
            self.bad.append(f"{method} {path}: {exc!r}")
            return None
        self.statuses[resp.status_code] += 1
        if method == "DELETE" and resp.status_code == 404:
            # The first attempt deleted it on a replica that died before it
            # answered; haproxy retried the (idempotent) DELETE elsewhere. The
            # consumer is gone, which is what was asked: checked afterwards.
            return 204
        if resp.status_code not in self.SUCCESS | self.RETRYABLE:
            self.bad.append(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
        return resp.status_code

    def run(self):
        rng = random.Random()
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            consumer, provider, amount = str(uuid.uuid4()), rng.choice(self.providers), rng.randint(1, 4)
            body = {
                "allocations": {provider: {"resources": {"VCPU": amount}}},
                "project_id": self.project,
                "user_id": self.project,
                "consumer_generation": None,
                "consumer_type": "INSTANCE",
            }
            status = self.request("PUT", f"/allocations/{consumer}", json=body)
            if status in self.SUCCESS:
                self.written[consumer] = (provider, amount)
                if rng.random() < 0.5:
                    deleted = self.request("DELETE", f"/allocations/{consumer}")
                    if deleted in self.SUCCESS:
                        self.deleted.add(consumer)
                    elif deleted is not None:
                        self.maybe_deleted.add(consumer)
            elif status is not None:
                self.unsure[consumer] = (provider, amount)
            time.sleep(0.02)


def vcpu_providers(url, headers, prefix, count=4):
    """`count` new resource providers with room for any number of VCPU allocations."""
    run = uuid.uuid4().hex[:8]
    made = []
    for index in range(count):
        rp = requests.post(
            f"{url}/resource_providers",
            json={"name": f"{prefix}-{run}-{index}"},
            headers=headers,
            timeout=10,
        ).json()
        inv = {"resource_provider_generation": rp["generation"], "inventories": {"VCPU": {"total": 100000}}}
        resp = requests.put(f"{url}/resource_providers/{rp['uuid']}/inventories", json=inv, headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        made.append(rp["uuid"])
    return made


def check_books(url, headers, providers, writers):
    """Placement's own books balance (usages equal the sum of allocations),
    every write a Writer saw acknowledged is there exactly, and every one whose
    outcome it was not told is all or nothing."""
    for rp in providers:
        usages = requests.get(f"{url}/resource_providers/{rp}/usages", headers=headers, timeout=10).json()
        allocations = requests.get(f"{url}/resource_providers/{rp}/allocations", headers=headers, timeout=10)
        total = sum(a["resources"].get("VCPU", 0) for a in allocations.json()["allocations"].values())
        assert usages["usages"].get("VCPU", 0) == total
    for writer in writers:
        for consumer, (rp, amount) in {**writer.written, **writer.unsure}.items():
            got = requests.get(f"{url}/allocations/{consumer}", headers=headers, timeout=10).json()["allocations"]
            exact = {rp: {"resources": {"VCPU": amount}, "generation": got.get(rp, {}).get("generation")}}
            if consumer in writer.deleted:
                assert got == {}
            elif consumer in writer.written and consumer not in writer.maybe_deleted:
                assert got == exact
            else:
                assert got in ({}, exact)
