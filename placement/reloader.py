"""Serve a placement tree under development, reloading it when its code
changes, one replica at a time.

    python3 reloader.py uwsgi --ini /etc/placement/uwsgi.ini

The entrypoint runs this instead of uwsgi when PLACEMENT_SRC names a
placement tree (compose.src.yaml mounts one in every replica). It:

* holds the listening socket (:8778) and hands it to each uwsgi it starts,
  the way systemd socket activation does (LISTEN_FDS), so the socket
  outlives any one uwsgi: no connection is refused or reset by a reload;
* keeps a standby uwsgi that has imported placement's dependencies (most of
  a start's second) and waits, before placement itself, for a go;
* looks at PLACEMENT_SRC/placement/**/*.py (tests aside) every POLL seconds;
* on a change, takes the rolling-reload lock (a file in a volume that every
  replica mounts), tells the standby to go (or starts a uwsgi from cold),
  waits for it to report READY=1 (sd_notify: the app is loaded and the
  workers are up), then stops the old uwsgi gracefully (its requests in
  flight finish) and lets the lock go. Replicas therefore reload one after
  another, and each keeps serving while it does;
* when the tree does not load (the new uwsgi exits: need-app), stops the
  old uwsgi as well and closes the socket: this replica turns unhealthy,
  haproxy serves from the others, and they stay on the code they run,
  because this replica keeps the lock until a later change loads. It also
  records the tree that failed (its snapshot's digest, beside the lock): a
  replica that gets the lock with that very tree does not load it, so a lock
  holder that goes away (its container recreated) does not hand the broken
  tree to the replicas in line; and a replica that starts with it loads it
  under the lock, as a reload;
* while in line for the lock, keeps tending its own uwsgis: it ends when
  the serving one exits, and stops when told to, as it does out of line.

A uwsgi that fails for any other reason (bad settings, no database) ends
this process with uwsgi's exit status, as a replica without a tree would.
"""

import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORT = 8778  # placement/uwsgi.ini: http-socket = :8778
LOCK = Path("/var/lib/placement/reload/lock")
POLL = 0.1  # seconds between looks at the tree (16.0.0: 91 files, about 0.5 ms a look)
# A new standby waits this long after a reload, so that its imports do not
# slow down the other replicas' turns.
STANDBY_DELAY = 3
READY_TIMEOUT = 120  # a uwsgi that neither starts nor fails in this long is stopped
FAILED_APP = 22  # uwsgi's exit status when need-app finds no app (UWSGI_FAILED_APP_CODE)
# uwsgi takes fd 3 as its socket when LISTEN_PID names it (systemd's
# protocol); the shell makes fd 3 a copy of ours and execs uwsgi in place.
LAUNCH = 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@" 3<&"$0"'


def log(message):
    print(f"placedock: {message}", file=sys.stderr, flush=True)


def snapshot(tree):
    """{path: (mtime, size)} of the tree's placement/**/*.py, tests left out."""
    files = {}
    for root, dirs, names in os.walk(tree / "placement"):
        dirs[:] = [d for d in dirs if d not in ("tests", "__pycache__") and not d.startswith(".")]
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:  # removed while we looked
                    continue
                files[path] = (st.st_mtime_ns, st.st_size)
    return files


def digest(files):
    """The same for the same tree state in every replica (they mount one tree)."""
    return hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()


def failed_record():
    """Beside the lock: the digest of the tree that last failed to load under it."""
    return LOCK.with_name("failed")


def failed_digest():
    try:
        return failed_record().read_text().strip()
    except FileNotFoundError:
        return None


def record_failed(files):
    record = failed_record()
    partial = record.with_name(f"failed.{os.getpid()}")
    partial.write_text(digest(files) + "\n")
    os.replace(partial, record)


def changed(old, new, tree):
    paths = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
    names = [os.path.relpath(p, tree) for p in paths[:3]]
    return ", ".join(names) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


class Uwsgi:
    """One uwsgi on the shared socket, and its readiness channel. A standby
    one stops before loading placement until go() (see placedock_wsgi.py)."""

    def __init__(self, command, listener, workdir, standby=False):
        self.notify_path = os.path.join(workdir, f"notify-{time.monotonic_ns()}")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        env = {**os.environ, "NOTIFY_SOCKET": self.notify_path, "UWSGI_PROTOCOL": "http"}
        fds = [listener.fileno()]
        self.go_fd = None
        if standby:
            wait_fd, self.go_fd = os.pipe()
            env["PLACEDOCK_STANDBY_FD"] = str(wait_fd)
            fds.append(wait_fd)
        self.process = subprocess.Popen(["sh", "-c", LAUNCH, str(fds[0]), *command], env=env, pass_fds=fds)
        if standby:
            os.close(wait_fd)

    def alive(self):
        return self.process.poll() is None

    def go(self):
        """A standby: load placement now."""
        os.write(self.go_fd, b"go")
        self.release()

    def release(self):
        """A standby that never got a go sees end-of-file and exits."""
        if self.go_fd is not None:
            os.close(self.go_fd)
            self.go_fd = None

    def wait_ready(self, stopping):
        """True once uwsgi says READY=1; False if it exits (or hangs) first."""
        deadline = time.monotonic() + READY_TIMEOUT
        self.notify.settimeout(0.1)
        try:
            while time.monotonic() < deadline and not stopping():
                try:
                    if b"READY=1" in self.notify.recv(4096):
                        return True
                except TimeoutError:
                    pass
                if not self.alive():
                    return False
            self.stop()
            return False
        finally:
            self.close()

    def stop(self):
        """Graceful: uwsgi finishes the requests in flight (uwsgi.ini)."""
        self.release()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        self.close()

    def close(self):
        if self.notify.fileno() != -1:
            self.notify.close()
            os.unlink(self.notify_path)


class Reloader:
    def __init__(self, tree, command):
        self.tree = tree
        self.command = command
        self.workdir = tempfile.mkdtemp(prefix="placedock-reload-")
        self.listener = None
        self.current = None  # the Uwsgi serving now
        self.standby = None  # the next one, warm, waiting for a go
        self.standby_due = None  # when to start the next standby
        self.retiring = []  # old ones finishing their requests
        self.lock = None  # open file while this replica holds the reload lock
        self.loaded = {}  # the snapshot the current uwsgi loaded
        self.stop_signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.on_signal)

    def on_signal(self, signum, _frame):
        self.stop_signal = signum

    def stopping(self):
        return self.stop_signal is not None

    def current_exited(self):
        return self.current is not None and not self.current.alive()

    def take_lock(self):
        """Wait for the rolling-reload lock, tending this replica's uwsgis
        meanwhile (another replica may hold it for long: a tree that does not
        load). False if asked to stop, or if the serving uwsgi exits, first."""
        if self.lock is not None:
            return True
        lock = open(LOCK)  # the image makes it; held across calls: closing it lets the lock go
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.lock = lock
                return True
            except BlockingIOError:
                self.tend()
                if self.stopping() or self.current_exited():
                    lock.close()
                    return False
                time.sleep(0.02)

    def release_lock(self):
        if self.lock is not None:
            self.lock.close()  # closing the file releases the flock
            self.lock = None

    def retire(self, uwsgi):
        if uwsgi is not None:
            uwsgi.stop()
            self.retiring.append(uwsgi)

    def start(self, files):
        """Serve `files` from a new uwsgi; once it is ready, retire the old one.
        Returns uwsgi's exit status if the new one failed, else None."""
        if self.listener is None:
            self.listener = socket.create_server(("0.0.0.0", PORT), backlog=128)  # noqa: S104 - haproxy's
        new, self.standby = self.standby, None
        if new is not None and new.alive():
            new.go()
        else:
            self.retire(new)
            new = Uwsgi(self.command, self.listener, self.workdir)
        self.loaded = files
        if new.wait_ready(self.stopping):
            self.retire(self.current)
            self.current = new
            self.standby_due = time.monotonic() + STANDBY_DELAY
            if self.lock is not None:
                failed_record().unlink(missing_ok=True)
            return None
        # Refused at once from now on: haproxy and the healthcheck see it down.
        # A standby would keep the socket open, so none is kept while down.
        self.retire(self.current)
        self.current = None
        self.listener.close()
        self.listener = None
        self.standby_due = None
        status = new.process.wait()
        if status == FAILED_APP and self.lock is not None:
            record_failed(files)
        return status

    def tend(self):
        """Reap retired uwsgis; start the standby when it is due."""
        self.retiring = [u for u in self.retiring if u.alive()]
        if self.standby_due is not None and time.monotonic() >= self.standby_due:
            self.standby_due = None
            self.standby = Uwsgi(self.command, self.listener, self.workdir, standby=True)

    def shutdown(self):
        """Stop every uwsgi; the exit status is the serving one's."""
        for uwsgi in (self.current, self.standby, *self.retiring):
            if uwsgi is not None:
                uwsgi.stop()
        status = self.current.process.wait() if self.current is not None else 0
        for uwsgi in (self.standby, *self.retiring):
            if uwsgi is not None:
                uwsgi.process.wait()
        return status

    def run(self):
        """Serve until SIGTERM; the exit status is uwsgi's."""
        log(f"PLACEMENT_SRC={self.tree}: serving this tree; a change to placement/**/*.py reloads it")
        try:
            files = snapshot(self.tree)
            # A tree that failed under the lock (in this replica before it
            # was recreated, perhaps): loaded under the lock too, and kept on
            # failure, so that the replicas in line do not load it meanwhile.
            status = None  # stays so if asked to stop while in line
            if digest(files) != failed_digest() or self.take_lock():
                status = self.start(files)
                if status is None:
                    self.release_lock()
                if status == FAILED_APP:
                    log("the tree does not load (see above): this replica is out of rotation until the next change")
                    status = None
                if status is None:
                    status = self.watch()
        finally:
            self.release_lock()
            stopped = self.shutdown()
        return stopped if status is None else status

    def watch(self):
        while not self.stopping():
            time.sleep(POLL)
            self.tend()
            if self.current is not None and not self.current.alive():
                log(f"uwsgi exited with status {self.current.process.returncode}")
                return self.current.process.returncode
            files = snapshot(self.tree)
            if files == self.loaded:
                continue
            time.sleep(0.05)  # let an editor finish writing
            if snapshot(self.tree) != files:
                continue
            what = changed(self.loaded, files, self.tree)
            asked = time.monotonic()
            if not self.take_lock():
                if self.current_exited():
                    log(f"uwsgi exited with status {self.current.process.returncode}")
                    return self.current.process.returncode
                break
            got = time.monotonic()
            files = snapshot(self.tree)  # with whatever changed while we waited
            if digest(files) == failed_digest():
                self.release_lock()
                self.loaded = files
                log(
                    f"{what} changed: not loaded: this tree did not load in another replica (see its log); "
                    "this replica keeps its code until a change loads"
                )
                continue
            status = self.start(files)
            done = time.monotonic()
            if status is None:
                self.release_lock()
                log(f"{what} changed: reloaded in {done - got:.2f}s, after {got - asked:.2f}s in line")
            elif status == FAILED_APP:
                log(
                    f"{what} changed: the tree does not load (see above): this replica is out of rotation, and "
                    "the other replicas keep their code until a change here loads"
                )
            elif not self.stopping():
                log(f"uwsgi exited with status {status}")
                return status
        return None


def main():
    tree = Path(os.environ["PLACEMENT_SRC"])
    if len(sys.argv) < 2:
        sys.exit("usage: reloader.py COMMAND...")
    sys.exit(Reloader(tree, sys.argv[1:]).run())


if __name__ == "__main__":
    main()
