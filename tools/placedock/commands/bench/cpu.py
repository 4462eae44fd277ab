"""Where the CPU went during a measurement.

Client, servers and everyone else's work share the machine's cores, so each
measurement also reads, before and after, the CPU time of: this process (the
load generator), each of the benchmark's containers (its cgroup, v1 or v2:
placedock.stack.cgroup; by compose service), docker's userland proxy for the
benchmark's published ports, the raw uwsgi's processes when it runs, and the
whole machine (/proc/stat). What the whole machine used beyond those is
"others". Only our own containers and processes are read, and only read. A
container whose cgroup cannot be read stops the benchmark with one line: CPU
tables do not go missing without a word.

When it knows the benchmark's mariadb container it also reads InnoDB's deadlock
and row-lock-wait counters, which explain slow write tails (oslo.db retries a
deadlocked transaction after a pause).
"""

import os
import subprocess
import time
from pathlib import Path

from placedock.stack import cgroup

CLOCK_TICKS = cgroup.CLOCK_TICKS


class Unreadable(RuntimeError):
    """A container's CPU cannot be read on this host; the message is one line."""


def _proc_cpu_ns(pid):
    """utime + stime of one process (all its threads), in ns."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return (int(fields[11]) + int(fields[12])) * 10**9 // CLOCK_TICKS


def _proxy_pids(ports):
    """docker-proxy processes serving our published ports."""
    wanted = {str(p) for p in ports}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"docker-proxy"):
            decoded = [a.decode(errors="replace") for a in args]
            if "-host-port" in decoded and decoded[decoded.index("-host-port") + 1] in wanted:
                pids.append(int(entry.name))
    return pids


def _children(pid):
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def _pids(cids):
    """{container ID: the host PID of its first process}, in one `docker inspect`."""
    if not cids:
        return {}
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}} {{.State.Pid}}", *cids], check=True, capture_output=True, text=True
    ).stdout
    return dict((cid, int(pid)) for cid, pid in (line.split() for line in out.splitlines()))


class CpuMeter:
    """meter.start() ... meter.stop() -> {component: CPU seconds} plus 'elapsed' and 'others'."""

    def __init__(self, project, ports, enabled=True, proc=cgroup.PROC, root=cgroup.CGROUP_ROOT):
        """enabled=False (--no-cpu): only InnoDB's counters, and the report says there was no CPU accounting."""
        self.project = project
        self.ports = ports
        self.raw_pid = None
        self.mariadb = None
        self.enabled = enabled
        self.proc = proc
        self.root = root
        if enabled and cgroup.cgroup_version(root) is None:
            raise Unreadable(
                f"no CPU accounting under {root}: neither cgroup v1 (cpuacct) nor v2 (cgroup.controllers) is there"
            )

    def _containers(self):
        out = subprocess.run(
            [
                "docker",
                "ps",
                "--no-trunc",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--format",
                '{{.ID}} {{.Label "com.docker.compose.service"}} {{.Label "com.docker.compose.oneoff"}}',
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows = [(line.split() + ["", ""])[:3] for line in out.splitlines()]
        pids = _pids([cid for cid, _, _ in rows])
        groups = {}
        for cid, service, oneoff in rows:
            name = f"{service} (one-off)" if oneoff == "True" else service
            if service.startswith("galera-"):
                name = "galera nodes"
            groups.setdefault(name, []).append((cid, pids[cid]))
        return groups

    def _container_ns(self, cid, pid):
        used = cgroup.cgroup_cpu_ns(pid, cid, self.proc, self.root)
        if used is None:
            raise Unreadable(
                f"the CPU of container {cid[:12]} (pid {pid}) cannot be read under {self.root} "
                f"(cgroup v{cgroup.cgroup_version(self.root)}): rerun with --no-cpu to measure without it"
            )
        return used

    def _snapshot(self):
        times = os.times()
        snap = {"client": int((times.user + times.system) * 10**9)}
        for name, ids in self.groups.items():
            snap[name] = sum(self._container_ns(cid, pid) for cid, pid in ids)
        snap["docker-proxy"] = sum(_proc_cpu_ns(pid) for pid in self.proxies)
        if self.raw_pids:
            snap["raw uwsgi"] = sum(_proc_cpu_ns(pid) for pid in self.raw_pids)
        snap["machine"] = cgroup.machine_cpu_ns(self.proc)
        return snap

    def _innodb(self):
        if not self.mariadb:
            return {}
        out = subprocess.run(
            [
                "docker",
                "exec",
                self.mariadb,
                "mariadb",
                "--protocol=tcp",
                "-h",
                "127.0.0.1",
                "-u",
                "healthcheck",
                "-N",
                "-B",
                "-e",
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_deadlocks', 'Innodb_row_lock_waits')",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return {name: int(value) for name, value in (line.split() for line in out.splitlines())}

    def start(self):
        self.db_before = self._innodb()
        if not self.enabled:
            return
        self.groups = self._containers()
        self.proxies = _proxy_pids(self.ports)
        self.raw_pids = [self.raw_pid, *_children(self.raw_pid)] if self.raw_pid else []
        self.t0 = time.monotonic()
        self.before = self._snapshot()

    def stop(self):
        """CPU seconds per component since start() ('others' = the machine minus all
        of ours), 'elapsed', and the InnoDB counters' increase."""
        used = {}
        if self.enabled:
            after = self._snapshot()
            used = {k: (after[k] - self.before.get(k, 0)) / 1e9 for k in after}
            machine = used.pop("machine")
            used["others"] = max(0.0, machine - sum(used.values()))
            used["elapsed"] = time.monotonic() - self.t0
        for name, value in self._innodb().items():
            used[name] = value - self.db_before.get(name, 0)
        return used


def merge(parts):
    """Add up several stop() results."""
    total = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total
