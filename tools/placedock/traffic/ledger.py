"""One ledger for the traffic sent through the front door while the stack is
changed under it: by the stack tests, the fault tests, the swarm tests, the
upgrade rehearsal and the benchmark alike.

Every request's outcome is one of:

- **acknowledged**: a write answered 2xx. What it wrote must be readable
  afterwards, every one of them (`Ledger.verify`).
- **refused**: a write answered with a clear client status (400, 404, 409, ...):
  nothing was applied, and that is checked too. Counted apart, by status,
  never as a success.
- **in doubt**: a write with no answer, or answered 5xx (502, 503, 504: the
  replica may have applied it before its answer was lost). Checked afterwards
  all or nothing; each test states how many it allows.
- **a failed read**: a GET answered anything but 200, or not at all. Counted,
  with the moment it happened, so a test can state the window.

Nothing is rewritten: a DELETE answered 404 is refused, not deleted. A
`Retry-After` is honoured: the worker that got it waits that long (within its
deadline) before its next request.
"""

import random
import threading
import time
import uuid
from collections import Counter, defaultdict

import requests

from placedock.api.client import READS, retry_after

TIMEOUT = 30
# The longest a Retry-After is waited for.
MAX_WAIT = 10.0

ACKNOWLEDGED, REFUSED, IN_DOUBT, READ, READ_FAILED = "acknowledged", "refused", "in doubt", "read", "read failed"


def classify(method, status):
    """The outcome of one request: `status` None when there was no answer."""
    if method in READS:
        return READ if status == 200 else READ_FAILED
    if status is None or status >= 500:
        return IN_DOUBT
    if 200 <= status < 300:
        return ACKNOWLEDGED
    return REFUSED


class Ledger:
    """What every request was answered, and what each write leaves behind.

    `expect(key, *states)`: after the traffic, reading `key` must give one of
    `states`. Keys are ("allocations", consumer) (read back as {provider:
    resources}) or ("inventories", provider) (read back as {class: total};
    None for a provider that does not exist)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.started_at = time.time()  # the same moment on the wall clock, to line failures up with logs
        self.outcomes = Counter()  # outcome -> requests
        self.statuses = Counter()  # "METHOD status" -> requests
        self.refused = Counter()  # "METHOD status" -> writes refused
        self.in_doubt = []  # (seconds since start, "METHOD path", what)
        self.read_failures = []  # (seconds since start, "GET path", what)
        self.slowest = 0.0
        self.took = defaultdict(list)  # outcome -> seconds each request took
        self.expected = {}
        self.waited = 0.0  # seconds spent honouring Retry-After

    def record(self, method, path, resp, took=0.0, error=None):
        """One request's answer (`resp` None: no answer, `error` says why); its outcome."""
        status = None if resp is None else resp.status_code
        outcome = classify(method, status)
        what = error if resp is None else f"{status} {resp.text[:200]}"
        at = time.monotonic() - self.started
        with self.lock:
            self.outcomes[outcome] += 1
            self.statuses[f"{method} {status or 'no answer'}"] += 1
            self.slowest = max(self.slowest, took)
            self.took[outcome].append(took)
            if outcome == REFUSED:
                self.refused[f"{method} {status}"] += 1
            elif outcome == IN_DOUBT:
                self.in_doubt.append((at, f"{method} {path}", what))
            elif outcome == READ_FAILED:
                self.read_failures.append((at, f"{method} {path}", what))
        return outcome

    def expect(self, key, *states):
        with self.lock:
            self.expected[key] = states

    def expect_write(self, key, outcome, before, after):
        """What a write from `before` to `after` leaves, by its outcome:
        `after` if acknowledged, `before` if refused, either if in doubt."""
        states = {ACKNOWLEDGED: (after,), REFUSED: (before,), IN_DOUBT: (before, after)}[outcome]
        self.expect(key, *states)

    @property
    def reads(self):
        return self.outcomes[READ] + self.outcomes[READ_FAILED]

    @property
    def writes(self):
        return self.outcomes[ACKNOWLEDGED] + self.outcomes[REFUSED] + self.outcomes[IN_DOUBT]

    @property
    def sent(self):
        """Every request sent, reads and writes, answered or not."""
        return self.reads + self.writes

    def read_window(self):
        """(first, last) failed read, in seconds since the ledger started; None without one."""
        times = [at for at, _, _ in self.read_failures]
        return (min(times), max(times)) if times else None

    def summary(self):
        window = self.read_window()
        failed = f"{len(self.read_failures)} failed" + (f" in {window[0]:.1f}-{window[1]:.1f}s" if window else "")
        return (
            f"{self.reads} reads ({failed}); {self.writes} writes: {self.outcomes[ACKNOWLEDGED]} acknowledged, "
            f"{self.outcomes[REFUSED]} refused {dict(self.refused)}, {len(self.in_doubt)} in doubt; "
            f"slowest {self.slowest:.2f}s"
        )

    def verify(self, url, headers):
        """Every expectation read back through `url`: 'what differs' lines, none when all hold."""
        session = requests.Session()
        session.headers.update(headers)
        wrong = []
        for key, states in list(self.expected.items()):
            held = _read(session, url, key)
            if held not in states:
                wrong.append(f"{key[0]} of {key[1]}: placement has {held}, expected one of {list(states)}")
        return wrong


def _read(session, url, key):
    kind, uu = key
    if kind == "allocations":
        resp = session.get(f"{url}/allocations/{uu}", timeout=TIMEOUT)
        resp.raise_for_status()
        return {rp: held["resources"] for rp, held in resp.json()["allocations"].items()}
    resp = session.get(f"{url}/resource_providers/{uu}/inventories", timeout=TIMEOUT)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return {rc: inv["total"] for rc, inv in resp.json()["inventories"].items()}


class _Worker(threading.Thread):
    """Requests in a loop until stopped or `seconds` have passed, each recorded
    in the shared ledger; a Retry-After is waited out before the next."""

    def __init__(self, url, headers, ledger, seconds, pause):
        super().__init__(daemon=True)
        self.url, self.ledger, self.pause = url, ledger, pause
        self.deadline = time.monotonic() + seconds
        self.stop = threading.Event()
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.error = None

    def request(self, method, path, body=None):
        """The response, or None without one; recorded. (response, outcome)."""
        started = time.monotonic()
        try:
            resp = self.session.request(method, self.url + path, json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            # The class and its message: "ConnectionError" alone does not say
            # whether the connection was refused, reset or closed idle.
            self.ledger.record(method, path, None, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:300])
            return None, classify(method, None)
        outcome = self.ledger.record(method, path, resp, time.monotonic() - started)
        wait = retry_after(resp, MAX_WAIT)
        if wait:
            wait = min(wait, max(self.deadline - time.monotonic(), 0))
            with self.ledger.lock:
                self.ledger.waited += wait
            self.stop.wait(wait)
        return resp, outcome

    def running(self):
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def run(self):
        try:
            while self.running():
                self.step()
                self.stop.wait(self.pause)
        except Exception as exc:  # a bug here must fail the test, not hide in a thread
            self.error = f"{type(exc).__name__}: {exc}"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


class Reader(_Worker):
    """GETs of `paths` in turn (a list, or a function giving the next list)."""

    def __init__(self, url, headers, ledger, paths=("/",), seconds=180, pause=0.02):
        super().__init__(url, headers, ledger, seconds, pause)
        self.paths = paths

    def step(self):
        for path in self.paths() if callable(self.paths) else self.paths:
            if not self.running():
                return
            self.request("GET", path)


class Writer(_Worker):
    """Allocations for fresh consumers on `providers` (each with ample VCPU),
    half of them deleted again; every write's outcome expected in the ledger."""

    def __init__(self, url, headers, ledger, providers, project, seconds=180, pause=0.02, seed=None):
        super().__init__(url, headers, ledger, seconds, pause)
        self.providers, self.project = providers, project
        self.rng = random.Random(seed)  # noqa: S311 - spreads load, no secret
        self.live = []  # consumers acknowledged and not deleted: (consumer, allocations)

    def step(self):
        if self.live and self.rng.random() < 0.5:
            self.deallocate()
        else:
            self.allocate()

    def allocate(self):
        consumer = str(uuid.uuid4())
        allocations = {self.rng.choice(self.providers): {"VCPU": self.rng.randint(1, 4)}}
        body = {
            "allocations": {rp: {"resources": resources} for rp, resources in allocations.items()},
            "project_id": self.project,
            "user_id": self.project,
            "consumer_generation": None,
            "consumer_type": "INSTANCE",
        }
        _, outcome = self.request("PUT", f"/allocations/{consumer}", body)
        self.ledger.expect_write(("allocations", consumer), outcome, {}, allocations)
        if outcome == ACKNOWLEDGED:
            self.live.append((consumer, allocations))

    def deallocate(self):
        consumer, allocations = self.live.pop(self.rng.randrange(len(self.live)))
        _, outcome = self.request("DELETE", f"/allocations/{consumer}")
        self.ledger.expect_write(("allocations", consumer), outcome, allocations, {})


class Traffic:
    """Readers of `paths` and writers on `providers`, sharing one ledger: started
    on entering, stopped and joined on leaving (a worker's own bug raises then).

        with Traffic(url, headers, paths, providers, writers=2) as book:
            ...  # change the stack
        assert book.verify(url, headers) == []
    """

    def __init__(
        self, url, headers, paths=("/",), providers=(), readers=1, writers=0, seconds=180, project=None, pause=0.02
    ):
        self.ledger = Ledger()
        project = project or str(uuid.uuid4())
        self.workers = [Reader(url, headers, self.ledger, paths, seconds, pause) for _ in range(readers)]
        self.workers += [
            Writer(url, headers, self.ledger, list(providers), project, seconds, pause) for _ in range(writers)
        ]

    def __enter__(self):
        for worker in self.workers:
            worker.start()
        return self.ledger

    def __exit__(self, kind, *_):
        self.join(stop=True)
        errors = [worker.error for worker in self.workers if worker.error]
        if errors and kind is None:
            raise RuntimeError(f"traffic: {errors}")

    def join(self, stop=False):
        """Wait for every worker (its `seconds`); with `stop`, stop them first."""
        for worker in self.workers:
            if stop:
                worker.stop.set()
            worker.join()


def vcpu_providers(url, headers, prefix, count=4):
    """`count` new resource providers with room for any number of VCPU allocations."""
    run = uuid.uuid4().hex[:8]
    made = []
    for index in range(count):
        resp = requests.post(
            f"{url}/resource_providers", json={"name": f"{prefix}-{run}-{index}"}, headers=headers, timeout=10
        )
        resp.raise_for_status()
        rp = resp.json()
        inv = {"resource_provider_generation": rp["generation"], "inventories": {"VCPU": {"total": 100000}}}
        resp = requests.put(f"{url}/resource_providers/{rp['uuid']}/inventories", json=inv, headers=headers, timeout=10)
        resp.raise_for_status()
        made.append(rp["uuid"])
    return made


def unbalanced(url, headers, providers):
    """Providers whose usages differ from the sum of their allocations: 'what' lines."""
    wrong = []
    for rp in providers:
        usages = requests.get(f"{url}/resource_providers/{rp}/usages", headers=headers, timeout=10).json()
        allocations = requests.get(f"{url}/resource_providers/{rp}/allocations", headers=headers, timeout=10)
        total = sum(a["resources"].get("VCPU", 0) for a in allocations.json()["allocations"].values())
        if usages["usages"].get("VCPU", 0) != total:
            wrong.append(f"provider {rp}: usages {usages['usages']}, allocations add up to VCPU {total}")
    return wrong
