"""The benchmark's own compose project and what it reads from Docker.

The project is placedock-bench on loopback ports of its own (front door 28778,
haproxy stats 28404, mariadb 23306), so the test project (placedock-test) and
anyone's dev stack are left alone. Only containers of this project are ever
started, stopped, inspected or sent traffic.
"""

import csv
import io
import json
import os
import subprocess
import time
import urllib.request

PROJECT = "placedock-bench"
PORTS = {"PLACEMENT_PORT": 28778, "HAPROXY_STATS_PORT": 28404, "BENCH_MARIADB_PORT": 23306}
FILES = ["compose.yaml", "compose.bench.yaml"]
# The same stack on a 3-node Galera cluster behind the database front door.
GALERA_FILES = ["compose.yaml", "compose.galera.yaml", "compose.bench.yaml"]

# Run inside a placement container: every uwsgi process with its RSS and PSS.
# PID 1 is the uwsgi master (the entrypoint execs it); the others are workers.
_MEMORY_PROBE = r"""
import json, os
out = []
for pid in sorted((p for p in os.listdir('/proc') if p.isdigit()), key=int):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            cmd = f.read().split(b'\0')[0].decode()
        if os.path.basename(cmd) != 'uwsgi':
            continue
        fields = {}
        for name in ('status', 'smaps_rollup'):
            with open(f'/proc/{pid}/{name}') as f:
                for line in f:
                    key, _, value = line.partition(':')
                    fields.setdefault(key, value.split())
    except OSError:
        continue
    out.append({
        'pid': int(pid),
        'role': 'master' if pid == '1' else 'worker',
        'threads': int(fields['Threads'][0]),
        'rss_kib': int(fields['VmRSS'][0]),
        'pss_kib': int(fields['Pss'][0]),
    })
print(json.dumps(out))
"""


class BenchStack:
    """docker compose -f compose.yaml [-f compose.galera.yaml] -f compose.bench.yaml -p placedock-bench."""

    def __init__(self, root, compose_command, files=FILES):
        self.root = root
        self.base = [*compose_command]
        for name in files:
            self.base += ["-f", str(root / name)]
        self.base += ["-p", PROJECT]
        # Our ports always; no UWSGI_* from the caller's shell reaches compose.
        env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
        self.env = {**env, **{k: str(v) for k, v in PORTS.items()}}

    @property
    def front_door(self):
        return f"http://127.0.0.1:{PORTS['PLACEMENT_PORT']}"

    @property
    def stats_url(self):
        return f"http://127.0.0.1:{PORTS['HAPROXY_STATS_PORT']}"

    def compose(self, *args, check=True, capture=False, timeout=600):
        return subprocess.run(
            [*self.base, *args],
            cwd=self.root,
            env=self.env,
            check=check,
            text=True,
            capture_output=capture,
            timeout=timeout,
        )

    def build(self):
        self.compose("build", "-q", capture=True)

    def up(self, replicas):
        self.compose("up", "-d", "--scale", f"placement={replicas}", capture=True)

    def scale(self, replicas):
        """Scale placement only: no dependency is touched or recreated."""
        self.compose(
            "up", "-d", "--no-deps", "--no-recreate", "--scale", f"placement={replicas}", "placement", capture=True
        )

    def down(self):
        self.compose("down", "-v", "--remove-orphans", check=False, capture=True, timeout=300)

    def run_detached(self, service, *command, env=None):
        """A one-off container of `service` (not in haproxy's DNS); returns its name."""
        flags = [f"-e{k}={v}" for k, v in (env or {}).items()]
        out = self.compose("run", "-d", "--no-deps", *flags, service, *command, capture=True).stdout
        return out.strip().splitlines()[-1]

    def container_ids(self, service):
        return self.compose("ps", "-q", service, capture=True).stdout.split()

    def image_names(self):
        out = self.compose("config", capture=True).stdout
        names = []
        for line in out.splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "image" and value not in names:
                names.append(value)
        return names

    # --- haproxy ----------------------------------------------------------------

    def haproxy_servers(self):
        """[(server name, status, address)] of the placement backend, from haproxy's CSV stats."""
        with urllib.request.urlopen(self.stats_url + "/stats;csv", timeout=2) as resp:
            text = resp.read().decode().lstrip("# ")
        return [
            (row["svname"], row["status"], (row.get("addr") or "").rsplit(":", 1)[0])
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "placement" and row["svname"] not in ("FRONTEND", "BACKEND")
        ]

    def up_count(self):
        try:
            return sum(1 for _, status, _ in self.haproxy_servers() if status == "UP")
        except OSError:
            return -1

    def wait_up(self, count, timeout, poll=0.1):
        """Wait until haproxy reports exactly `count` replicas UP; return the seconds it took."""
        start = time.monotonic()
        seen = None
        while time.monotonic() - start < timeout:
            seen = self.up_count()
            if seen == count:
                return time.monotonic() - start
            time.sleep(poll)
        raise TimeoutError(f"haproxy did not report {count} UP replicas within {timeout:g}s (last: {seen})")


# --- plain docker -----------------------------------------------------------------


def inspect(container):
    out = subprocess.run(["docker", "inspect", container], check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]


def container_ip(container):
    networks = inspect(container)["NetworkSettings"]["Networks"]
    return next(iter(networks.values()))["IPAddress"]


def container_env(container):
    return dict(item.split("=", 1) for item in inspect(container)["Config"]["Env"] if "=" in item)


def container_health(container):
    return inspect(container)["State"].get("Health", {}).get("Status")


def uwsgi_memory(container):
    """Every uwsgi process of a placement container: role, threads, RSS and PSS in KiB."""
    out = subprocess.run(
        ["docker", "exec", container, "python3", "-c", _MEMORY_PROBE],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return json.loads(out)


def image_size(image):
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", image], check=True, capture_output=True, text=True
    ).stdout
    return int(out.strip())


def restart(container):
    return subprocess.Popen(["docker", "restart", container], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def remove(container):
    subprocess.run(["docker", "rm", "-f", container], check=False, capture_output=True)
