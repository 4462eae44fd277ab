"""CPU time as the kernel keeps it, per container and for the whole machine.

A container's CPU is its cgroup's: cgroup v1's cpuacct.usage, or cgroup v2's
cpu.stat usage_usec, found through /proc/PID/cgroup of the container's first
process (so Docker's systemd and cgroupfs drivers alike, and hybrid hosts). The
whole machine's is /proc/stat's, which every Linux has. Used by the autoscaler
and by the benchmark; both say so in one line when neither hierarchy can be read.
"""

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cgroup_cpu_ns(pid, container_id, proc=PROC, root=CGROUP_ROOT):
    """CPU time used by the cgroup of process PID, in ns; None unless that
    process is in a cgroup named for container_id on this host (a PID from
    another host, or one reused, is not read)."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    v1 = v2 = None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            v1 = path
        elif hierarchy == "0" and controllers == "":
            v2 = path
    for path in (v1, v2):
        if path is not None and container_id not in path:
            return None
    if v1 is not None:
        for mount in ("cpuacct", "cpu,cpuacct"):
            usage = root / mount / v1.lstrip("/") / "cpuacct.usage"
            if usage.exists():
                return int(usage.read_text())
    if v2 is not None:
        stat = root / v2.lstrip("/") / "cpu.stat"
        if stat.exists():
            for line in stat.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) * 1000
    return None


def cgroup_version(root=CGROUP_ROOT):
    """1, 2, or None: the hierarchy the CPU is read from on this host."""
    if (root / "cpuacct" / "cpuacct.usage").exists() or (root / "cpu,cpuacct" / "cpuacct.usage").exists():
        return 1
    if (root / "cgroup.controllers").exists():
        return 2
    return None


def machine_cpu_ns(proc=PROC):
    """CPU time every core of the machine has spent busy (not idle, not waiting for I/O), in ns."""
    fields = (proc / "stat").read_text().splitlines()[0].split()
    assert fields[0] == "cpu", fields
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = [int(x) for x in fields[1:9]]
    del busy[3:5]
    return sum(busy) * 10**9 // CLOCK_TICKS
