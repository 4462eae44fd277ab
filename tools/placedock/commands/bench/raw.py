"""The reference: upstream placement under uwsgi on the host, no container, no haproxy.

Same packages (a venv made the way the image's build stage makes it: uWSGI and
PyMySQL with common/constraints.txt, then placement/release.py installs the release
with its pins from placement/releases/; cached between runs and remade when
one of those files or the interpreter changes), same uwsgi.ini except that it listens on a
loopback port and loads upstream's WSGI module directly, same placement settings from env/placement.env, same mariadb
(published on the host's loopback by compose.bench.yaml) with a database of
its own.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from placedock.api.client import wait_ready
from placedock.stack import compose as stack
from placedock.stack.procmem import process_memory

STAMP = ".placedock-bench-stamp"
# pip's wheel cache is keyed by the Python minor version only: a uWSGI wheel built
# earlier by another 3.11 (pyenv's, say) links that interpreter's libpython and
# fails to load the app under this one. Build everything for this interpreter.
PIP_FLAGS = ["--no-cache-dir"]


def default_python():
    """Debian's python3, the interpreter the placement image runs, when the host has it."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def _fingerprint(root, python):
    digest = hashlib.sha256()
    release = stack.placement_release()
    for name in ("common/constraints.txt", "placement/release.py", f"placement/releases/{release}.txt"):
        digest.update((root / name).read_bytes())
    version = subprocess.run([python, "--version"], check=True, capture_output=True, text=True).stdout
    digest.update(f"{python} {version} {PIP_FLAGS}".encode())
    return digest.hexdigest()


def ensure_venv(root, venv, python, log_path):
    """Make (or reuse) the venv; return True when it was reused. pip's output goes to log_path."""
    stamp = venv / STAMP
    wanted = _fingerprint(root, python)
    if stamp.exists() and stamp.read_text() == wanted:
        return True
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = str(venv / "bin" / "pip")
    serving = [pip, "install", *PIP_FLAGS, "-c", str(root / "common" / "constraints.txt"), "uWSGI", "PyMySQL"]
    release = [python, str(root / "placement" / "release.py"), "install", stack.placement_release(), str(venv)]
    env = {**os.environ, "PLACEDOCK_RELEASES": str(root / "placement" / "releases"), "PIP_NO_CACHE_DIR": "1"}
    with open(log_path, "w") as log:
        for command in (serving, release):
            status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=1800).returncode
            if status:
                raise RuntimeError(f"{' '.join(command[:3])} into {venv} failed (exit {status}); see {log_path}")
    stamp.write_text(wanted)
    return False


# Upstream's WSGI entry point: the reference runs placement itself, without the
# image's start-up checks (placement/placedock_wsgi.py) in front of it.
UPSTREAM_MODULE = "placement.wsgi.api:application"


def image_workers():
    """(processes, threads) per replica: UWSGI_PROCESSES / UWSGI_THREADS in
    the built placement image's environment."""
    env = json.loads(stack.docker("image", "inspect", "--format", "{{json .Config.Env}}", stack.image("placement")))
    found = dict(item.split("=", 1) for item in env)
    return int(found["UWSGI_PROCESSES"]), int(found["UWSGI_THREADS"])


def uwsgi_ini(root, port):
    """placement/uwsgi.ini for the host: listening on 127.0.0.1:port, loading
    upstream's module, and without the image's pythonpath; every other option
    (buffers, ...) as the image has it, and the image's processes and threads."""
    processes, threads = image_workers()
    lines = []
    for line in (root / "placement" / "uwsgi.ini").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in ("http-socket", "http11-socket"):
            line = f"{key} = 127.0.0.1:{port}"
        elif key == "module":
            line = f"module = {UPSTREAM_MODULE}"
        elif key == "pythonpath":
            continue
        lines.append(line)
    lines += [f"processes = {processes}", f"threads = {threads}"]
    return "\n".join(lines) + "\n"


class RawPlacement:
    """uwsgi on 127.0.0.1:port, started and stopped by us (its own process group)."""

    def __init__(self, root, venv, port, db_url, workdir):
        self.url = f"http://127.0.0.1:{port}"
        self.venv = venv
        self.workdir = workdir
        self.ini = workdir / "uwsgi.ini"
        self.ini.write_text(uwsgi_ini(root, port))
        self.log = workdir / "uwsgi.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "OS_"))}
        self.env = {
            **base,
            **stack.env_file("placement.env"),
            "OS_PLACEMENT_DATABASE__CONNECTION": db_url,
            "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
        }
        self.proc = None

    def db_sync(self):
        subprocess.run(
            [str(self.venv / "bin" / "placement-manage"), "db", "sync"],
            env=self.env,
            cwd=self.workdir,
            check=True,
            capture_output=True,
            timeout=300,
        )

    def start(self, timeout):
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(self.venv / "bin" / "uwsgi"), "--ini", str(self.ini)],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            return wait_ready(self.url, timeout, alive=lambda: self.proc.poll() is None)
        except (TimeoutError, RuntimeError) as exc:
            tail = self.log.read_text()[-2000:]
            raise RuntimeError(f"raw placement did not start ({exc}); uwsgi log:\n{tail}") from None

    def stop(self):
        """SIGTERM (uwsgi finishes in-flight requests), then SIGKILL the group if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def memory(self):
        """The uwsgi master and its workers: role, threads, RSS, PSS and USS in KiB."""
        master = self.proc.pid
        pids = [master] + [pid for pid in _pids() if _ppid(pid) == master]
        rows = (process_memory(pid, "master" if pid == master else "worker") for pid in pids)
        return [row for row in rows if row]


def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
