"""What the autoscaler reads and changes: the placement replicas of a compose
project or of a swarm service, their CPU from their cgroups, the front door's
traffic from haproxy's request log, and the one call that changes the count.

CPU is read as the kernel keeps it, the container's cgroup (placedock.stack.cgroup: v1's
cpuacct.usage, or v2's cpu.stat usage_usec, found through
/proc/PID/cgroup of the container's first process (so the systemd and cgroupfs
drivers alike)). A replica on another host has no cgroup here: it has no
sample, and the algorithm counts it as the controller counts a pod without
metrics. When no replica at all can be read, the autoscaler stops with one line.
"""

import datetime
import json
import re
import subprocess

from placedock.commands.autoscale.hpa import Replica
from placedock.stack import compose as stack
from placedock.stack import swarm
from placedock.stack.cgroup import cgroup_cpu_ns

# httplog's timers (Tq/Tw/Tc/Tr/Ta) and status, then the bytes.
HTTPLOG = re.compile(r" (-?\d+)/(-?\d+)/(-?\d+)/(-?\d+)/(\d+) (\d{3}) ")


class Unreadable(RuntimeError):
    """The autoscaler cannot go on; the message is one line."""


def docker_time(text):
    """Docker's RFC 3339 time (nanoseconds, Z or an offset) as epoch seconds;
    None for none, or Go's zero time."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text or "")
    if not match or text.startswith("0001-"):
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    return datetime.datetime.fromisoformat(match[1] + zone).timestamp() + float(match[2] or 0)


def docker_json(*args, host=()):
    done = subprocess.run(["docker", *host, *args], capture_output=True, text=True)
    if done.returncode != 0:
        return []
    return json.loads(done.stdout or "[]")


class Samples:
    """The last CPU reading of each replica, so a new one gives a rate."""

    def __init__(self):
        self.last = {}
        self.unread = set()  # replicas of the last look whose cgroup could not be read

    def sample(self, name, cpu_ns, now):
        """(millicores since the last reading, window in s), or (None, 0) for a
        first reading or none."""
        previous = self.last.get(name)
        if cpu_ns is None:
            self.unread.add(name)
            self.last.pop(name, None)
            return None, 0.0
        self.last[name] = (now, cpu_ns)
        if previous is None or now <= previous[0] or cpu_ns < previous[1]:
            return None, 0.0
        window = now - previous[0]
        return (cpu_ns - previous[1]) / 1e6 / window, window

    def forget(self, names):
        """Keep only the replicas of this look."""
        names = set(names)
        for name in set(self.last) - names:
            del self.last[name]
        self.unread &= names

    def begin(self):
        self.unread = set()


class Readiness:
    """When each replica last became ready or not ready: the Ready condition's
    lastTransitionTime. `since` is when the replica's own record says it
    changed (a task's state time; the first passing health probe docker still
    keeps): taken when it falls after the previous look, else the time of
    this look, which is later than the change, never earlier."""

    def __init__(self):
        self.seen = {}  # name: (ready, transition, last look)

    def note(self, name, ready, now, since=None):
        previous = self.seen.get(name)
        if previous is None:
            transition = since or now
        elif previous[0] != ready:
            transition = since if since and previous[2] < since <= now else now
        else:
            transition = previous[1]
        self.seen[name] = (ready, transition, now)
        return transition


class ComposeTarget:
    """The placement service of a compose project that is up."""

    def __init__(self, project, service="placement"):
        self.service = service
        self.stack = stack.Stack.running(project)
        self.stack.quiet = True  # compose's output would break the live view; an error keeps it
        self.samples, self.readiness = Samples(), Readiness()
        self.reference = f"compose/{project}/{service}"

    def _containers(self):
        ids = self.stack.container_ids(self.service, all_states=True)
        return docker_json("inspect", *ids) if ids else []

    def current(self, replicas):
        """Its replica count, from this sync's look: containers running or
        starting (compose keeps no desired count)."""
        return sum(1 for r in replicas if r.phase in ("Running", "Pending"))

    def cpu_limit_m(self):
        """The replicas' CPU limit in millicores (None: none)."""
        limits = {c["HostConfig"].get("NanoCpus") or 0 for c in self._containers()}
        limit = max(limits, default=0)
        return limit // 10**6 or None

    def replicas(self, now):
        self.samples.begin()
        found = []
        for c in self._containers():
            name = c["Name"].lstrip("/")
            state = c["State"]
            status = state["Status"]
            phase = {"running": "Running", "created": "Pending", "restarting": "Pending", "removing": "Deleting"}.get(
                status, "Failed"
            )
            replica = Replica(name, phase, started=docker_time(state.get("StartedAt")))
            if phase == "Running":
                health = state.get("Health")
                ready = health is None or health["Status"] == "healthy"
                passed = [docker_time(p["End"]) for p in (health or {}).get("Log") or [] if p.get("ExitCode") == 0]
                first = min(passed, default=None) if ready else replica.started
                replica.ready = ready
                replica.transition = self.readiness.note(name, ready, now, since=first)
                replica.usage_m, replica.window = self.samples.sample(name, cgroup_cpu_ns(state["Pid"], c["Id"]), now)
                replica.sampled = now
            found.append(replica)
        self.samples.forget(r.name for r in found)
        return found

    def scale(self, replicas):
        """The tested rescale: placement only, no one-shot run again, nothing recreated."""
        self.stack.scale(replicas)

    def requests(self, since, until):
        """[(status, total time ms)] of the front door's requests to placement in [since, until)."""
        (proxy, *_) = self.stack.container_ids("haproxy") or [None]
        if proxy is None:
            return []
        done = subprocess.run(
            ["docker", "logs", "--since", f"{since:.3f}", "--until", f"{until:.3f}", proxy],
            capture_output=True,
            text=True,
        )
        return parse_httplog(done.stdout + done.stderr)


class SwarmTarget:
    """The placement service of the stack on a swarm (PLACEDOCK_SWARM_HOST's manager)."""

    def __init__(self, service=None):
        self.name = service or swarm.service("placement")
        self.samples, self.readiness = Samples(), Readiness()
        self.reference = f"swarm/{self.name}"
        if not swarm.manager("service", "ls", "-q", "--filter", f"name={self.name}", check=False):
            raise Unreadable(f"no service {self.name} on the swarm (placedock swarm deploy first)")

    def current(self, replicas):
        """The service's replica count, as its spec says (not the tasks seen)."""
        return int(swarm.manager("service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", self.name))

    def cpu_limit_m(self):
        nano = swarm.manager(
            "service", "inspect", "--format", "{{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}}", self.name
        )
        return int(nano or 0) // 10**6 or None

    def _tasks(self):
        ids = swarm.manager(
            "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", self.name, check=False
        ).split()
        return docker_json("inspect", *ids, host=swarm.host_flags()) if ids else []

    def replicas(self, now):
        self.samples.begin()
        found = []
        for task in self._tasks():
            status = task["Status"]
            state = status["State"]
            name = f"{self.name}.{task.get('Slot', '?')}.{task['ID'][:12]}"
            if state in ("running", "starting"):
                phase = "Running"
            elif state in ("new", "pending", "assigned", "accepted", "preparing", "ready"):
                phase = "Pending"
            else:
                phase = "Failed"
            replica = Replica(name, phase, started=docker_time(task.get("CreatedAt")))
            if phase == "Running":
                # A task with a health check is "starting" until it passes.
                ready = state == "running"
                replica.ready = ready
                replica.transition = self.readiness.note(name, ready, now, since=docker_time(status.get("Timestamp")))
                container = status.get("ContainerStatus") or {}
                cpu = cgroup_cpu_ns(container.get("PID") or 0, container.get("ContainerID") or "-")
                replica.usage_m, replica.window = self.samples.sample(name, cpu, now)
                replica.sampled = now
            found.append(replica)
        self.samples.forget(r.name for r in found)
        return found

    def scale(self, replicas):
        swarm.manager("service", "scale", "--detach", f"{self.name}={replicas}")

    def requests(self, since, until):
        proxy = self.name.rsplit("_", 1)[0] + "_haproxy"
        out = swarm.manager("service", "logs", "--raw", "--since", f"{since:.3f}", proxy, check=False)
        # `service logs` has no --until: the lines of this period only, by their own time.
        return parse_httplog(out, since=since, until=until)


def haproxy_time(text):
    """haproxy's accept date (05/Dec/2026:04:22:01.123), taken as UTC."""
    moment = datetime.datetime.strptime(text, "%d/%b/%Y:%H:%M:%S.%f")
    return moment.replace(tzinfo=datetime.UTC).timestamp()


ACCEPT_DATE = re.compile(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\]")


def parse_httplog(text, since=None, until=None):
    """[(status, Ta ms)] of haproxy's httplog lines for the placement backend."""
    found = []
    for line in text.splitlines():
        if " placement/" not in line:
            continue
        match = HTTPLOG.search(line)
        if not match:
            continue
        if since is not None:
            accepted = ACCEPT_DATE.search(line)
            if accepted is None or not since <= haproxy_time(accepted.group(1)) < until:
                continue
        found.append((int(match.group(6)), int(match.group(5))))
    return found
