"""CPU from the kernel's accounting, on both cgroup hierarchies (placedock.stack.cgroup),
and the benchmark's meter on top of it: a container's CPU is read on v1 and v2
alike, and a host where neither can be read stops the benchmark with one line
instead of its CPU tables vanishing. Fake /proc and /sys/fs/cgroup trees, no docker."""

import subprocess

import pytest
from placedock.commands.bench import cpu
from placedock.stack import cgroup

CID = "0123456789ab" * 5 + "cdef"
# user nice system idle iowait irq softirq steal guest guest_nice, in clock ticks
PROC_STAT = "cpu  100 0 50 9000 40 5 5 0 0 0\ncpu0 50 0 25 4500 20 2 3 0 0 0\n"


def fake_host(tmp_path, proc_cgroup, files):
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(proc_cgroup)
    (proc / "stat").write_text(PROC_STAT)
    root = tmp_path / "cgroup"
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return proc, root


V1 = (
    f"12:cpu,cpuacct:/docker/{CID}\n1:name=systemd:/docker/{CID}\n0::/docker/{CID}\n",
    "cpuacct/docker/{}/cpuacct.usage",
)
V2 = (f"0::/system.slice/docker-{CID}.scope\n", "system.slice/docker-{}.scope/cpu.stat")


def test_cgroup_v1_cpuacct(tmp_path):
    proc, root = fake_host(tmp_path, V1[0], {V1[1].format(CID): "123456789\n", "cpuacct/cpuacct.usage": "1\n"})
    assert cgroup.cgroup_cpu_ns(42, CID, proc, root) == 123456789
    assert cgroup.cgroup_version(root) == 1


def test_cgroup_v2_cpu_stat_systemd_driver(tmp_path):
    proc, root = fake_host(
        tmp_path,
        V2[0],
        {
            V2[1].format(CID): "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
            "cgroup.controllers": "cpu io memory pids\n",
        },
    )
    assert cgroup.cgroup_cpu_ns(42, CID, proc, root) == 2_500_000
    assert cgroup.cgroup_version(root) == 2


def test_a_process_not_in_the_containers_cgroup_is_not_read(tmp_path):
    """A PID from another host (a swarm node elsewhere), or reused: no sample, not a wrong one."""
    proc, root = fake_host(
        tmp_path, "0::/user.slice/session-1.scope\n", {"user.slice/session-1.scope/cpu.stat": "usage_usec 9\n"}
    )
    assert cgroup.cgroup_cpu_ns(42, CID, proc, root) is None
    assert cgroup.cgroup_cpu_ns(43, CID, proc, root) is None


def test_no_cpu_accounting_at_all_is_said(tmp_path):
    assert cgroup.cgroup_version(tmp_path) is None


def test_the_machine_is_busy_time_from_proc_stat(tmp_path):
    proc, _ = fake_host(tmp_path, V2[0], {})
    # user + nice + system + irq + softirq + steal; idle and iowait are not busy
    assert cgroup.machine_cpu_ns(proc) == 160 * 10**9 // cgroup.CLOCK_TICKS


@pytest.fixture
def one_placement_container(monkeypatch):
    """docker ps lists one placement container of the project; docker inspect gives its PID, 42."""

    def fake_run(cmd, **kwargs):
        if cmd[:2] == ["docker", "ps"]:
            out = f"{CID} placement False\n"
        elif cmd[:2] == ["docker", "inspect"]:
            out = f"{CID} 42\n"
        else:
            raise AssertionError(cmd)
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(cpu.subprocess, "run", fake_run)


@pytest.mark.parametrize(
    "hierarchy, marker, before, after, used",
    [
        (V1, "cpuacct/cpuacct.usage", "1000000000\n", "1500000000\n", 0.5),
        (V2, "cgroup.controllers", "usage_usec 1000000\n", "usage_usec 1250000\n", 0.25),
    ],
    ids=["v1", "v2"],
)
def test_the_meter_reads_a_container_on_either_hierarchy(
    tmp_path, one_placement_container, hierarchy, marker, before, after, used
):
    proc_cgroup, usage = hierarchy
    proc, root = fake_host(tmp_path, proc_cgroup, {usage.format(CID): before, marker: "1\n"})
    meter = cpu.CpuMeter("placedock-bench", [28778], proc=proc, root=root)
    meter.start()
    (root / usage.format(CID)).write_text(after)
    result = meter.stop()
    assert result["placement"] == pytest.approx(used)
    assert {"client", "docker-proxy", "others", "elapsed"} <= set(result)


def test_no_hierarchy_stops_the_benchmark_with_one_line(tmp_path):
    with pytest.raises(cpu.Unreadable, match=r"neither cgroup v1 \(cpuacct\) nor v2"):
        cpu.CpuMeter("placedock-bench", [28778], root=tmp_path)
    # Asked for by name, the benchmark goes on without CPU figures.
    assert cpu.CpuMeter("placedock-bench", [28778], enabled=False, root=tmp_path).stop() == {}


def test_a_container_whose_cgroup_cannot_be_read_is_named(tmp_path, one_placement_container):
    proc, root = fake_host(tmp_path, "0::/user.slice/session-1.scope\n", {"cgroup.controllers": "cpu\n"})
    with pytest.raises(cpu.Unreadable, match=rf"container {CID[:12]} \(pid 42\).*--no-cpu"):
        cpu.CpuMeter("placedock-bench", [28778], proc=proc, root=root).start()
