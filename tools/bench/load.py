"""HTTP load against one placement URL (a front door, a replica, or the raw reference).

The perfload part follows placeload 0.4.0 (placement's gate perfload job): every
provider is created by POST /resource_providers, then gets the same inventory,
one, two or three of three fixed aggregates, and one, two or three of three fixed
traits (all of them include HW_CPU_X86_AVX2), each with the generation
placeload hard-codes. placeload does it with aiohttp; here a thread pool does
the same four requests per provider, in order, many providers at a time.
"""

import itertools
import random
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import ledger
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

# The gate's queries: with the aggregate every provider is in and the trait
# every provider has, and without either.
AC_RESOURCES = "resources=VCPU:1,DISK_GB:10,MEMORY_MB:256"
AC_QUERIES = {
    "member_of+required": f"{AC_RESOURCES}&member_of={AGGREGATES[0]}&required={TRAITS[0]}",
    "resources only": AC_RESOURCES,
}


def session():
    s = requests.Session()
    s.headers.update(HEADERS)
    return s


def percentile(values, q):
    """The q-th percentile (0..100) of values, linearly interpolated."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


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


# --- perfload -------------------------------------------------------------------


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


def allocation_candidates(url, calls, warmup_calls):
    """Time `calls` sequential GETs of each gate query, after `warmup_calls` untimed ones.

    The warm-up lets every uwsgi worker behind the target (six for three replicas
    of two processes) serve the query once before the timing starts.
    """
    s = session()
    results = {}
    for name, query in AC_QUERIES.items():
        full = f"{url}/allocation_candidates?{query}"
        for _ in range(max(1, warmup_calls)):
            resp = s.get(full, timeout=REQUEST_TIMEOUT)
            resp.raise_for_status()
        candidates = len(resp.json()["allocation_requests"])
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            resp = s.get(full, timeout=REQUEST_TIMEOUT)
            times.append(time.perf_counter() - t0)
            resp.raise_for_status()
        results[name] = {
            "query": query,
            "candidates": candidates,
            "calls": calls,
            "warmup_calls": max(1, warmup_calls),
            "p50": percentile(times, 50),
            "p95": percentile(times, 95),
            "mean": statistics.fmean(times),
        }
    return results


# --- fixed-duration mixes ---------------------------------------------------------


class _Stats:
    """One client thread's requests, by outcome (tools/ledger.py's taxonomy: a
    read answered 200 or a write acknowledged is ok; a write refused, e.g. a
    409, is counted apart; anything else is an error). Only those that
    completed before the deadline count toward req/s and latency: requests
    still in flight at the end are finished (and counted in `completed`) but
    not timed, so a slow tail does not stretch the measuring window."""

    def __init__(self, deadline):
        self.deadline = deadline
        self.completed = 0
        self.latencies = []
        self.ok = 0
        self.errors = 0
        self.refused = 0
        self.samples = []
        self.by_kind = {}

    def record(self, kind, resp, started):
        elapsed = time.perf_counter() - started
        self.completed += 1
        if time.monotonic() > self.deadline:
            return
        self.latencies.append(elapsed)
        self.by_kind.setdefault(kind, []).append(elapsed)
        outcome = ledger.classify(resp.request.method, resp.status_code)
        if outcome in (ledger.READ, ledger.ACKNOWLEDGED):
            self.ok += 1
        elif outcome == ledger.REFUSED:
            self.refused += 1
        else:
            self.errors += 1
            if len(self.samples) < 3:
                self.samples.append(f"{resp.request.method} {resp.status_code} {resp.text[:400]}")


def _timed(s, stats, kind, method, url, **kwargs):
    t0 = time.perf_counter()
    resp = s.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
    stats.record(kind, resp, t0)
    return resp


def small_candidates_query(provider):
    """A small allocation-candidates query: one provider's tree (in_tree, as nova's targeted moves)."""
    return f"{AC_RESOURCES}&in_tree={provider}"


def read_op(s, url, stats, rng, providers, counter):
    """One read: GET /, GET /resource_providers?name=..., GET /allocation_candidates (small), in turn."""
    kind = next(counter) % 3
    if kind == 0:
        _timed(s, stats, "GET /", "GET", url + "/")
    elif kind == 1:
        path = f"/resource_providers?name={rng.choice(providers)}"
        _timed(s, stats, "GET /resource_providers?name", "GET", url + path)
    else:
        path = f"/allocation_candidates?{small_candidates_query(rng.choice(providers))}"
        _timed(s, stats, "GET /allocation_candidates (in_tree)", "GET", url + path)


def write_op(s, url, stats, rng, providers, counter, retries=5):
    """PUT allocations for a new consumer on a random provider, then DELETE them.

    A 409 on the PUT (a concurrent write bumped the provider's generation and
    placement's own retries ran out) is refused, counted apart, and sent again
    as a new request, at most `retries` times.
    """
    consumer = str(uuid.uuid4())
    body = {
        "allocations": {rng.choice(providers): {"resources": {"VCPU": 1, "MEMORY_MB": 256}}},
        "project_id": str(uuid.UUID(int=1)),
        "user_id": str(uuid.UUID(int=2)),
        "consumer_generation": None,
        "consumer_type": "INSTANCE",
    }
    for _ in range(retries + 1):
        resp = _timed(s, stats, "PUT /allocations", "PUT", f"{url}/allocations/{consumer}", json=body)
        if resp.status_code != 409:
            break
    if resp.status_code == 204:
        _timed(s, stats, "DELETE /allocations", "DELETE", f"{url}/allocations/{consumer}")


MIXES = {"read": read_op, "write": write_op}


def drive(url, mix, providers, concurrency, duration, max_requests, seed=0):
    """Run `mix` with `concurrency` threads for `duration` seconds, and at most
    `max_requests` requests; return the raw sample for summarize()."""
    return _drive(url, MIXES[mix], providers, concurrency, duration, max_requests, seed)


def summarize(mix, concurrency, samples):
    """req/s and latency percentiles over one or more samples of the same target and mix."""
    per_thread = [st for sample in samples for st in sample[0]]
    elapsed = sum(sample[1] for sample in samples)
    latencies = [x for st in per_thread for x in st.latencies]
    ok = sum(st.ok for st in per_thread)
    by_kind = {}
    for st in per_thread:
        for kind, values in st.by_kind.items():
            by_kind.setdefault(kind, []).extend(values)
    return {
        "mix": mix,
        "concurrency": concurrency,
        "seconds": elapsed,
        "rounds": len(samples),
        "requests": ok,
        "completed": sum(st.completed for st in per_thread),
        "errors": sum(st.errors for st in per_thread),
        "refused": sum(st.refused for st in per_thread),
        "error_samples": [x for st in per_thread for x in st.samples][:3],
        "rps": ok / elapsed if elapsed > 0 else float("nan"),
        "slice_rps": [sum(st.ok for st in sample[0]) / sample[1] for sample in samples if sample[1] > 0],
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "by_kind": {
            kind: {"requests": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99)}
            for kind, v in by_kind.items()
        },
    }


def _drive(url, op, providers, concurrency, duration, max_requests, seed):
    started = time.monotonic()
    deadline = started + duration
    budget = itertools.count()
    per_thread = [_Stats(deadline) for _ in range(concurrency)]

    def worker(index):
        s = session()
        rng = random.Random(seed * 1000 + index)  # noqa: S311 - spreads load, no secret
        counter = itertools.count(index)
        stats = per_thread[index]
        while time.monotonic() < deadline and next(budget) < max_requests:
            try:
                op(s, url, stats, rng, providers, counter)
            except requests.RequestException as exc:
                stats.errors += 1
                if len(stats.samples) < 3:
                    stats.samples.append(f"{type(exc).__name__}: {exc}"[:200])

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 2 * REQUEST_TIMEOUT)
    return per_thread, min(duration, time.monotonic() - started)
