"""The benchmark's data set, perfload: providers in the shape placement's gate
perfload job gives them.

It follows placeload 0.4.0: every provider is created by POST
/resource_providers, then gets the same inventory, one, two or three of three
fixed aggregates, and one, two or three of three fixed traits (all of them
include HW_CPU_X86_AVX2), each with the generation placeload hard-codes.
placeload does it with aiohttp; here a thread pool does the same four requests
per provider, in order, many providers at a time.
"""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

HEADERS = {
    "x-auth-token": "admin",
    "openstack-api-version": "placement latest",
    "accept": "application/json",
}
REQUEST_TIMEOUT = 60
# Perfload steps answered with a 5xx are tried again this many times.
RETRIES = 3

# placeload 0.4.0's fixed values.
AGGREGATES = [
    "14a5c8a3-5a99-4e8f-88be-00d85fcb1c17",
    "66d98e7c-3c25-485d-a0dc-1cea651884de",
    "a59dbb28-fd98-4c6e-9ec5-ae5f3d04b0aa",
]
AGG_CHUNKS = [AGGREGATES[0:1], AGGREGATES[0:2], AGGREGATES[0:3]]
TRAITS = ["HW_CPU_X86_AVX2", "HW_CPU_X86_SSE2", "STORAGE_DISK_SSD"]
TRAIT_CHUNKS = [TRAITS[0:1], TRAITS[0:2], TRAITS[0:3]]
INVENTORY = {
    "MEMORY_MB": {"total": 8192, "min_unit": 128, "max_unit": 8192},
    "DISK_GB": {"total": 8192, "min_unit": 5, "max_unit": 8192},
    "VCPU": {"total": 32, "min_unit": 1, "max_unit": 16},
}


def session():
    s = requests.Session()
    s.headers.update(HEADERS)
    return s


def _detail(resp):
    """The error's detail from placement's JSON error body, else the start of the body."""
    try:
        return " ".join(resp.json()["errors"][0]["detail"].split())[-300:]
    except (ValueError, KeyError, IndexError, TypeError):
        return resp.text[:300]


class _Loader:
    """Creates providers in placeload's shape; one requests.Session per thread."""

    def __init__(self, url, deadline):
        self.url = url
        self.deadline = deadline
        self.local = threading.local()
        self.lock = threading.Lock()
        self.failures = []
        self.retries = []

    def _session(self):
        if not hasattr(self.local, "session"):
            self.local.session = session()
        return self.local.session

    def _step(self, method, path, body, what):
        """One request; a 5xx (e.g. a database deadlock when many providers create
        the same new aggregate at once) is retried, at most RETRIES times, and counted."""
        for attempt in range(RETRIES + 1):
            resp = self._session().request(method, self.url + path, json=body, timeout=REQUEST_TIMEOUT)
            if resp.status_code < 500 or attempt == RETRIES:
                break
            with self.lock:
                self.retries.append(f"{what}: {resp.status_code} {_detail(resp)}")
            time.sleep(0.05 * (attempt + 1))
        if resp.status_code != 200:
            raise RuntimeError(f"{what} {path}: {resp.status_code} {_detail(resp)}")

    def create(self, index):
        if time.monotonic() > self.deadline:
            return None
        uu = str(uuid.uuid4())
        base = f"/resource_providers/{uu}"
        try:
            self._step("POST", "/resource_providers", {"uuid": uu, "name": uu}, "create")
            body = {"resource_provider_generation": 0, "inventories": INVENTORY}
            self._step("PUT", base + "/inventories", body, "inventory")
            body = {"resource_provider_generation": 1, "aggregates": AGG_CHUNKS[index % 3]}
            self._step("PUT", base + "/aggregates", body, "aggregates")
            body = {"resource_provider_generation": 2, "traits": TRAIT_CHUNKS[index % 3]}
            self._step("PUT", base + "/traits", body, "traits")
        except (requests.RequestException, RuntimeError) as exc:
            with self.lock:
                self.failures.append(str(exc))
            return None
        return uu


def perfload(url, count, concurrency, timeout):
    """Create `count` providers; return the load time, the providers and the failures."""
    started = time.monotonic()
    loader = _Loader(url, started + timeout)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        created = [uu for uu in pool.map(loader.create, range(count)) if uu]
    elapsed = time.monotonic() - started
    return {
        "seconds": elapsed,
        "requested": count,
        "created": len(created),
        "requests": 4 * len(created),
        "failures": loader.failures[:5],
        "failure_count": len(loader.failures),
        "retries": len(loader.retries),
        "retry_samples": sorted(set(loader.retries))[:3],
        "timed_out": time.monotonic() > started + timeout,
        "providers": created,
    }
