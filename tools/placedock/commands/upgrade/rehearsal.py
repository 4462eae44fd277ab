"""The rolling-upgrade rehearsal: placement N-1 -> N behind haproxy, under load.

1. up on release N-1 (its own compose project, noauth, on mariadb or
   PostgreSQL), N replicas;
2. load the data set (dataset.py) through the front door and read it back;
3. start readers and writers (traffic.py) through the front door;
4. run release N's `placement-manage db sync` against the live database,
   while N-1 serves (placement's migrations are expand-only);
5. replace the replicas one at a time: drain it in haproxy, wait for its
   requests in flight, stop and remove it, start one of release N, wait for
   haproxy to have it UP; never fewer than N-1 replicas UP;
6. stop the traffic and check what the issue promises (Report.checks).

Placement does not support downgrades: there is no N -> N-1 rehearsal.
"""

import collections
import os
import time
from dataclasses import dataclass, field

from placedock.commands.upgrade import dataset, traffic
from placedock.stack import compose as stack
from placedock.traffic import ledger

PROJECT = os.environ.get("PLACEDOCK_UPGRADE_PROJECT", "placedock-upgrade")
READERS = 2
WRITERS = 1


def series(release):
    """The OpenStack series of a placement release: one major version per
    series since 1.0.0 (Stein); 13.0.0 is 2025.1, 14.0.0 2025.2."""
    major = int(release.split(".")[0])
    return f"{2019 + (major - 1) // 2}.{1 if major % 2 else 2}"


def upgrade_path(old, new):
    """Whether upstream supports going from old to new in one step: adjacent
    series, or SLURP to SLURP (every .1 series since 2023.1 is a SLURP)."""
    steps = int(new.split(".")[0]) - int(old.split(".")[0])
    path = f"{series(old)} -> {series(new)}"
    if steps == 0:
        return f"{path}, a point release: supported"
    if steps == 1:
        return f"{path}, adjacent series: supported"
    if steps == 2 and series(old).endswith(".1") and series(old) >= "2023.1":
        return f"{path}, SLURP to SLURP (skip-level): supported"
    return f"{path}, skipping a series, not SLURP to SLURP: not supported upstream"


class RehearsalError(RuntimeError):
    """A step did not happen (as opposed to a check that failed afterwards)."""


@dataclass
class Report:
    old: str
    new: str
    replicas: int
    nodes: int
    database: str = "mariadb"
    phases: list = field(default_factory=list)  # (name, seconds, detail)
    requests: collections.Counter = field(default_factory=collections.Counter)
    traffic_seconds: float = 0.0
    in_doubt: int = 0
    checks: list = field(default_factory=list)  # (name, passed, detail)
    size: str = ""

    @property
    def passed(self):
        return bool(self.checks) and all(passed for _, passed, _ in self.checks)

    def check(self, name, passed, detail):
        self.checks.append((name, bool(passed), detail))

    def format(self):
        lines = [
            f"placedock upgrade rehearsal: openstack-placement {self.old} -> {self.new}, "
            f"{self.replicas} replicas behind haproxy, on {self.database}, {self.size}",
            f"upgrade path: {upgrade_path(self.old, self.new)}",
            "",
            f"  {'phase':<28}{'seconds':>8}",
        ]
        for name, seconds, detail in self.phases:
            lines.append(f"  {name:<28}{seconds:8.1f}  {detail}".rstrip())
        lines.append(f"  {'total':<28}{sum(s for _, s, _ in self.phases):8.1f}")
        lines += ["", f"  requests through the front door during the upgrade ({self.traffic_seconds:.1f} s):"]
        for status, count in sorted(self.requests.items()):
            lines.append(f"    {status:<20}{count:>7}")
        lines += [f"    {'writes in doubt':<20}{self.in_doubt:>7}", "", "  checks:"]
        for name, passed, detail in self.checks:
            lines.append(f"    {'PASS' if passed else 'FAIL'}  {name}: {detail}")
        verdict = "PASS" if self.passed else "FAIL"
        lines += ["", f"  result: {verdict} ({sum(p for _, p, _ in self.checks)} of {len(self.checks)} checks)"]
        return "\n".join(lines)


class Rehearsal:
    def __init__(self, old, new, replicas, nodes, log, database="mariadb"):
        self.old_stack = stack.Stack("noauth", PROJECT, database=database, PLACEMENT_VERSION=old)
        self.new_stack = stack.Stack("noauth", PROJECT, database=database, PLACEMENT_VERSION=new)
        self.url = stack.placement_url()
        self.report = Report(old, new, replicas, nodes, database)
        self.log = log

    # --- steps ------------------------------------------------------------------

    def phase(self, name, action):
        """Run action(); record how long it took and the detail it returns."""
        self.log(f"upgrade: {name} ...")
        started = time.monotonic()
        detail = action() or ""
        self.report.phases.append((name, time.monotonic() - started, detail))
        return detail

    def build(self):
        self.old_stack.compose("build", "-q")
        self.new_stack.compose("build", "-q", "placement")

    def up_old(self):
        self.old_stack.up(self.report.replicas, build=False)
        stack.wait_for_up(self.report.replicas)
        return f"version document max {self.max_version()}"

    def one_shot(self, stack_, *command):
        """A placement command in a one-shot container of that stack's release; the finished process."""
        return stack_.compose(
            "run", "--rm", "--no-deps", "placement-db-sync", *command, check=False, capture=True, timeout=300
        )

    def manage(self, stack_, *command):
        """Like one_shot, for a step that must succeed: its output."""
        done = self.one_shot(stack_, *command)
        if done.returncode != 0:
            raise RehearsalError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    def db_sync(self):
        before = self.manage(self.old_stack, "placement-manage", "db", "version")
        self.manage(self.new_stack, "placement-manage", "db", "sync")
        after = self.manage(self.new_stack, "placement-manage", "db", "version")
        return f"alembic revision {before} -> {after}"

    def max_version(self):
        return dataset.client(self.url).call("GET", "/")["versions"][0]["max_version"]

    def addresses(self):
        """{slot name: address} of the backend's servers, from haproxy's runtime API."""
        rows = {}
        for line in self.old_stack.haproxy_api("show servers state placement").splitlines():
            fields = line.split()
            if len(fields) > 4 and not line.startswith("#") and fields[1] == "placement":
                rows[fields[3]] = fields[4]
        return rows

    def sessions(self, slot):
        return next(int(row["scur"] or 0) for row in stack.haproxy_stats() if row["svname"] == slot)

    def replace(self, container):
        """Drain, stop and remove one N-1 replica; start one of release N."""
        address = stack.container_ip(container)
        slot = next((slot for slot, addr in self.addresses().items() if addr == address), None)
        if slot is None:
            raise RehearsalError(f"haproxy has no server at {address} ({container})")
        self.old_stack.haproxy_api(f"set server placement/{slot} state drain")
        drained = stack.wait_until(lambda: self.sessions(slot) == 0, 30, step=0.1, what=f"{slot} ({container}) drained")
        # Out of rotation for good before it stops: no health check flaps it back.
        self.old_stack.haproxy_api(f"set server placement/{slot} state maint")
        started = time.monotonic()
        stack.docker("stop", container)
        stopped = time.monotonic() - started
        stack.docker("rm", container)
        # The slot frees its address once Docker's DNS drops the name; then it
        # may take the next replica.
        stack.wait_until(lambda: self.addresses()[slot] != address, 15, step=0.1, what=f"{slot} released {address}")
        self.old_stack.haproxy_api(f"set server placement/{slot} state ready")
        before = set(self.new_stack.container_ids("placement"))
        started = time.monotonic()
        self.new_stack.scale(self.report.replicas)
        (fresh,) = set(self.new_stack.container_ids("placement")) - before
        fresh_address = stack.container_ip(fresh)
        # haproxy takes a new address as UP before checking it: first the
        # replica's own health check, then a passed haproxy check on its slot.
        stack.wait_until(
            lambda: stack.container_health(fresh) == "healthy",
            120,
            step=0.1,
            what=f"the {self.report.new} replica healthy",
        )

        def serving():
            slots = [slot for slot, addr in self.addresses().items() if addr == fresh_address]
            rows = {row["svname"]: row for row in stack.haproxy_stats()}
            return any(rows[s]["status"] == "UP" and rows[s]["check_status"] == "L7OK" for s in slots)

        stack.wait_until(serving, 30, step=0.1, what=f"the {self.report.new} replica at {fresh_address} UP in haproxy")
        up = time.monotonic() - started
        return f"drained in {drained:.1f} s, stopped in {stopped:.1f} s, {self.report.new} UP {up:.1f} s after start"

    # --- the whole thing ----------------------------------------------------------

    def run(self):
        report = self.report
        self.phase("build images", self.build)
        self.phase(f"up {report.old} x{report.replicas}", self.up_old)
        data = {}

        def load():
            data.update(dataset.load(self.url, report.nodes))
            return f"{len(data['providers'])} providers, {len(data['consumers'])} consumers"

        self.phase("load the data set", load)
        report.size = (
            f"{report.nodes} compute nodes ({len(data['providers'])} providers, {len(data['consumers'])} consumers)"
        )
        book = ledger.Ledger()
        writers = [traffic.Writer(self.url, book, f"upgrade-writer-{n}", seed=n) for n in range(WRITERS)]
        for writer in writers:
            writer.prepare()
        before = {}
        self.phase("read the data set back", lambda: before.update(dataset.snapshot(self.url, data)))
        readers = [traffic.Reader(self.url, book, data, seed=n) for n in range(READERS)]
        monitor = traffic.UpMonitor(lambda: len(stack.up_servers()))
        workers = [*readers, *writers, monitor]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        try:
            self.phase(f"db sync {report.new}", self.db_sync)
            for container in sorted(self.old_stack.container_ids("placement"), key=stack.container_name):
                name = stack.container_name(container).removeprefix(f"{PROJECT}-")
                self.phase(f"replace {name}", lambda c=container: self.replace(c))
            time.sleep(1)  # a last second of traffic on release N alone
        finally:
            for worker in workers:
                worker.stop.set()
            for worker in workers:
                worker.join(timeout=60)
        report.traffic_seconds = time.monotonic() - started
        report.requests.update(book.statuses)
        for worker in [*readers, *writers]:
            if worker.error:
                raise RehearsalError(f"a traffic thread broke: {worker.error}")
        report.in_doubt = len(book.in_doubt)
        self.phase("check", lambda: self.checks(data, before, book, monitor))
        return report

    def checks(self, data, before, book, monitor):
        report = self.report
        client = dataset.client(self.url)
        failed = book.read_failures
        report.check("no failed GET", not failed, f"{len(failed)} of {book.reads} failed {failed[:3] or ''}".rstrip())

        refused = sum(book.refused.values())
        report.check(
            "every write answered 2xx",
            not refused and not book.in_doubt,
            f"{book.writes} writes, {refused} refused {dict(book.refused) or ''}, {len(book.in_doubt)} in doubt "
            f"{book.in_doubt[:3] or ''}".replace(" ,", ",").rstrip(),
        )

        missing = book.verify(self.url, dataset.HEADERS)
        kinds = collections.Counter(kind for kind, _ in book.expected)
        report.check(
            "every acknowledged write is there",
            not missing,
            f"{kinds['allocations']} consumers and {kinds['inventories']} providers read back; "
            f"missing: {missing[:3] or 'none'}",
        )

        after = dataset.snapshot(self.url, data)
        diffs, count = dataset.differences(before, after)
        report.check(
            "the data set reads back identical",
            count == 0,
            f"{len(data['providers'])} providers (generation, inventories, traits, aggregates, allocations,"
            f" usages) and {len(data['consumers'])} consumers; {count} differences {diffs or ''}".rstrip(),
        )

        every_provider = client.call("GET", "/resource_providers")["resource_providers"]
        uneven = self.uneven_usages(client, every_provider)
        report.check(
            "usages = sum of allocations, every provider",
            not uneven,
            f"{len(every_provider)} providers; uneven: {uneven[:3] or 'none'}",
        )

        done = self.one_shot(self.new_stack, "placement-status", "upgrade", "check")
        results = [line.strip("| ").strip() for line in done.stdout.splitlines() if "Result:" in line]
        report.check(
            "placement-status upgrade check",
            done.returncode == 0,
            f"exit {done.returncode}: {', '.join(results) or done.stderr.strip()[-200:]}",
        )

        wanted = self.release_max_version(report.new)
        served = self.max_version()
        report.check(
            "version document: release N's max microversion",
            served == wanted,
            f"{served} (release {report.new}: {wanted})",
        )

        images = [
            stack.docker("inspect", "-f", "{{.Config.Image}}", c) for c in self.new_stack.container_ids("placement")
        ]
        new_image = stack.image("placement", report.new)
        report.check(
            f"every replica runs {report.new}",
            len(images) == report.replicas and set(images) == {new_image},
            f"{len(images)} replicas: {', '.join(sorted(set(images)))}",
        )
        report.check(
            f"never fewer than {report.replicas - 1} replicas UP",
            monitor.fewest is not None and monitor.fewest >= report.replicas - 1,
            f"fewest UP in haproxy: {monitor.fewest} ({monitor.samples} samples, every 0.2 s)",
        )

    def uneven_usages(self, client, providers):
        uneven = []
        for rp in providers:
            uu = rp["uuid"]
            usages = {rc: n for rc, n in client.call("GET", f"/resource_providers/{uu}/usages")["usages"].items() if n}
            summed = collections.Counter()
            for allocation in client.call("GET", f"/resource_providers/{uu}/allocations")["allocations"].values():
                summed.update(allocation["resources"])
            if usages != dict(summed):
                uneven.append(f"{rp['name']}: usages {usages}, allocations sum {dict(summed)}")
        return uneven

    def release_max_version(self, release):
        """The newest microversion a release serves, asked of its own image."""
        code = "from placement import microversion; print(microversion.max_version_string())"
        return stack.docker("run", "--rm", "--entrypoint", "python3", stack.image("placement", release), "-c", code)


def rehearse(old, new, replicas=3, nodes=8, keep=False, log=print, database="mariadb"):
    """Rehearse old -> new on `database` (stack.DATABASES); the Report. The
    stack is removed afterwards unless `keep`."""
    rehearsal = Rehearsal(old, new, replicas, nodes, log, database)
    try:
        return rehearsal.run()
    except Exception:
        rehearsal.old_stack.dump()
        raise
    finally:
        if keep:
            log(f"upgrade: stack kept: docker compose -p {PROJECT} down -v   removes it")
        else:
            rehearsal.new_stack.down()
