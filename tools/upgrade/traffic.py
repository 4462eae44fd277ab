"""Client traffic through the front door while the stack is upgraded.

Readers GET the data set (providers in a tree, allocation candidates, usages,
a consumer's allocations) and record every status. Writers change only their
own scratch tree, so the data set stays comparable byte for byte, and keep a
ledger of every write placement acknowledged, to be read back afterwards:

    consumer created (204)  -> its allocations must be there
    consumer deleted (204)  -> it must have none
    provider created (200) and its inventory set (200) -> both must be there

A write that got no answer, or a 5xx, is "in doubt": it may or may not have
happened, and is not checked either way (it is counted).
"""

import collections
import random
import threading
import time
import uuid

import requests

from upgrade import dataset

# Every request leaves a trace: the longest a client waits for one answer.
TIMEOUT = 30


class _Worker(threading.Thread):
    def __init__(self, url, pause):
        super().__init__(daemon=True)
        self.url = url
        self.pause = pause
        self.stop = threading.Event()
        self.session = requests.Session()
        self.session.headers.update(dataset.HEADERS)
        self.statuses = collections.Counter()
        self.failures = []  # (monotonic time, "METHOD path", what)
        self.error = None

    def request(self, method, path, body=None):
        """(status or None, parsed body or None); counted."""
        try:
            resp = self.session.request(method, self.url + path, json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            self.statuses[f"{method} no answer"] += 1
            self.failures.append((time.monotonic(), f"{method} {path}", type(exc).__name__))
            return None, None
        self.statuses[f"{method} {resp.status_code}"] += 1
        try:
            return resp.status_code, resp.json() if resp.content else None
        except ValueError:
            return resp.status_code, None

    def run(self):
        try:
            while not self.stop.is_set():
                self.step()
                time.sleep(self.pause)
        except Exception as exc:  # a bug here must fail the rehearsal, not hide in a thread
            self.error = f"{type(exc).__name__}: {exc}"


class Reader(_Worker):
    """GETs over the data set; anything but a 200 is a failed GET."""

    def __init__(self, url, data, seed, pause=0.01):
        super().__init__(url, pause)
        self.rng = random.Random(seed)  # noqa: S311 - spreads load, no secret
        self.data = data

    def _paths(self):
        provider = self.rng.choice(self.data["providers"])
        consumer = self.rng.choice(self.data["consumers"])
        return [
            f"/resource_providers?in_tree={provider}",
            "/allocation_candidates?resources=VCPU:1,MEMORY_MB:512,DISK_GB:10"
            f"&required={dataset.TRAITS[0]}&member_of={dataset.AGGREGATES[0]}&limit=10",
            f"/resource_providers/{provider}/usages",
            f"/allocations/{consumer}",
            f"/usages?project_id={dataset.PROJECT}",
        ]

    def step(self):
        for path in self._paths():
            status, _ = self.request("GET", path)
            if status not in (200, None):
                self.failures.append((time.monotonic(), f"GET {path}", status))


class Writer(_Worker):
    """Allocations made and removed, providers added, all in its own tree."""

    def __init__(self, url, name, seed, pause=0.02):
        super().__init__(url, pause)
        self.rng = random.Random(seed)  # noqa: S311 - spreads load, no secret
        self.name = name
        self.root = None
        self.consumers = {}  # uuid -> allocations acknowledged, or {} once deleted
        self.providers = {}  # uuid -> inventories acknowledged
        self.in_doubt = 0
        self.live = []

    def prepare(self):
        """The scratch tree, before the upgrade starts (through the dataset client: retried)."""
        client = dataset.client(self.url)
        self.root = dataset.create_provider(client, self.name)
        dataset.put_collection(client, self.root, "inventories", 0, inventories={"VCPU": dataset.inventory(100000)})
        self.providers[self.root] = {"inventories": {"VCPU": 100000}}

    def _refused(self, status, what):
        """A write not acknowledged: in doubt without an answer or with a 5xx, else refused."""
        if status is None or status >= 500:
            self.in_doubt += 1
        else:
            self.failures.append((time.monotonic(), what, status))

    def step(self):
        roll = self.rng.random()
        if roll < 0.5 or not self.live:
            self._allocate()
        elif roll < 0.85:
            self._deallocate()
        else:
            self._add_provider()

    def _allocate(self):
        consumer = str(uuid.uuid4())
        allocations = {self.root: {"resources": {"VCPU": self.rng.randint(1, 4)}}}
        status, _ = self.request("PUT", f"/allocations/{consumer}", dataset.new_consumer(allocations))
        if status == 204:
            self.consumers[consumer] = allocations
            self.live.append(consumer)
        else:
            self._refused(status, "PUT /allocations")

    def _deallocate(self):
        consumer = self.live.pop(self.rng.randrange(len(self.live)))
        status, _ = self.request("DELETE", f"/allocations/{consumer}")
        if status == 204:
            self.consumers[consumer] = {}
        else:
            # Not acknowledged: either state is right afterwards.
            del self.consumers[consumer]
            self._refused(status, "DELETE /allocations")

    def _add_provider(self):
        child = str(uuid.uuid4())
        body = {"uuid": child, "name": f"{self.name}-{child[:8]}", "parent_provider_uuid": self.root}
        status, _ = self.request("POST", "/resource_providers", body)
        if status != 200:
            self._refused(status, "POST /resource_providers")
            return
        # The provider is acknowledged; its inventory only once this answers 200.
        self.providers[child] = {"inventories": None}
        total = self.rng.randint(1, 64)
        status, _ = self.request(
            "PUT",
            f"/resource_providers/{child}/inventories",
            {"resource_provider_generation": 0, "inventories": {"SRIOV_NET_VF": dataset.inventory(total)}},
        )
        if status == 200:
            self.providers[child] = {"inventories": {"SRIOV_NET_VF": total}}
        else:
            self._refused(status, "PUT inventories")

    def unacknowledged(self, client):
        """Acknowledged writes that placement does not have now: 'what' lines."""
        missing = []
        for consumer, allocations in self.consumers.items():
            held = client.call("GET", f"/allocations/{consumer}")["allocations"]
            held = {rp: {"resources": a["resources"]} for rp, a in held.items()}
            if held != allocations:
                missing.append(f"consumer {consumer}: wrote {allocations}, placement has {held}")
        for provider, wanted in self.providers.items():
            resp = client.session().get(f"{self.url}/resource_providers/{provider}/inventories", timeout=TIMEOUT)
            if resp.status_code != 200:
                missing.append(f"provider {provider}: {resp.status_code}")
                continue
            if wanted["inventories"] is None:
                continue
            totals = {rc: inv["total"] for rc, inv in resp.json()["inventories"].items()}
            if totals != wanted["inventories"]:
                missing.append(f"provider {provider}: wrote {wanted['inventories']}, placement has {totals}")
        return missing


class UpMonitor(threading.Thread):
    """Samples how many replicas haproxy has UP; keeps the fewest seen."""

    def __init__(self, count_up, interval=0.2):
        super().__init__(daemon=True)
        self.count_up = count_up
        self.interval = interval
        self.stop = threading.Event()
        self.fewest = None
        self.samples = 0

    def run(self):
        while not self.stop.is_set():
            try:
                up = self.count_up()
            except OSError:
                up = 0  # haproxy's stats not answering counts as nothing serving
            self.fewest = up if self.fewest is None else min(self.fewest, up)
            self.samples += 1
            time.sleep(self.interval)
