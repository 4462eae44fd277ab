"""Timed traffic against one placement URL (a front door, a replica, or the
raw reference): the gate's allocation-candidate queries, and the
fixed-duration read and write mixes over the perfload providers, their
outcomes counted by the ledger's taxonomy.
"""

import itertools
import random
import statistics
import threading
import time
import uuid

import requests

from placedock.traffic import ledger
from placedock.traffic.perfload import AGGREGATES, REQUEST_TIMEOUT, TRAITS, session

# The gate's queries: with the aggregate every provider is in and the trait
# every provider has, and without either.
AC_RESOURCES = "resources=VCPU:1,DISK_GB:10,MEMORY_MB:256"
AC_QUERIES = {
    "member_of+required": f"{AC_RESOURCES}&member_of={AGGREGATES[0]}&required={TRAITS[0]}",
    "resources only": AC_RESOURCES,
}


def percentile(values, q):
    """The q-th percentile (0..100) of values, linearly interpolated."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


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
    """One client thread's requests, by outcome (placedock.traffic.ledger's taxonomy: a
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
