"""Client traffic through the front door while the stack is upgraded, counted
in the shared ledger (placedock.traffic.ledger: acknowledged, refused, in doubt, failed
reads).

Readers GET the data set (providers in a tree, allocation candidates, usages,
a consumer's allocations). Writers change only their own scratch tree, so the
data set stays comparable byte for byte: allocations made and removed on its
root, child providers added with an inventory. The ledger expects what each
answer allows:

    consumer created (204)  -> its allocations must be there
    consumer deleted (204)  -> it must have none
    provider created (200) and its inventory set (200) -> both must be there
    a write refused (4xx)   -> nothing of it is there
    a write in doubt (no answer, 5xx) -> all of it or nothing
"""

import random
import threading
import time
import uuid

from placedock.commands.upgrade import dataset
from placedock.traffic import ledger

# The rehearsal stops its workers itself; this is only their outer bound.
SECONDS = 3600


class Reader(ledger.Reader):
    """GETs over the data set; anything but a 200 is a failed read."""

    def __init__(self, url, book, data, seed, pause=0.01):
        super().__init__(url, dataset.HEADERS, book, self._paths, SECONDS, pause)
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


class Writer(ledger.Writer):
    """Allocations made and removed on its own root, providers added under it."""

    def __init__(self, url, book, name, seed, pause=0.02):
        super().__init__(url, dataset.HEADERS, book, [], dataset.PROJECT, SECONDS, pause, seed)
        self.name = name

    def prepare(self):
        """The scratch tree, before the upgrade starts (through the dataset client: retried)."""
        client = dataset.client(self.url)
        root = dataset.create_provider(client, self.name)
        dataset.put_collection(client, root, "inventories", 0, inventories={"VCPU": dataset.inventory(100000)})
        self.providers = [root]
        self.ledger.expect(("inventories", root), {"VCPU": 100000})

    def step(self):
        roll = self.rng.random()
        if roll < 0.5 or not self.live:
            self.allocate()
        elif roll < 0.85:
            self.deallocate()
        else:
            self.add_provider()

    def add_provider(self):
        child = str(uuid.uuid4())
        key = ("inventories", child)
        body = {"uuid": child, "name": f"{self.name}-{child[:8]}", "parent_provider_uuid": self.providers[0]}
        _, outcome = self.request("POST", "/resource_providers", body)
        # None: no such provider; {}: one with no inventory.
        self.ledger.expect_write(key, outcome, None, {})
        if outcome != ledger.ACKNOWLEDGED:
            return
        total = self.rng.randint(1, 64)
        body = {"resource_provider_generation": 0, "inventories": {"SRIOV_NET_VF": dataset.inventory(total)}}
        _, outcome = self.request("PUT", f"/resource_providers/{child}/inventories", body)
        self.ledger.expect_write(key, outcome, {}, {"SRIOV_NET_VF": total})


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
