"""Serve placement, reloading it when its code or its options change, one
replica at a time.

    python3 reloader.py uwsgi --ini /etc/placement/uwsgi.ini

The entrypoint runs this instead of uwsgi when PLACEMENT_SRC names a
placement tree (compose.src.yaml mounts one in every replica), or when the
options come from etcd (compose.etcd.yaml; placedock_etcd.py). What changes
is a "source": the tree (Tree, below) or the options under the etcd prefix
(Options); the machinery is one. It:

* holds the listening socket (:8778) and hands it to each uwsgi it starts,
  the way systemd socket activation does (LISTEN_FDS), so the socket
  outlives any one uwsgi: no connection is refused or reset by a reload;
* keeps a standby uwsgi that has imported placement's dependencies (most of
  a start's second) and waits, before placement itself, for a go;
* looks at PLACEMENT_SRC/placement/**/*.py (tests aside) every POLL seconds,
  or follows etcd's watch on the options' prefix;
* on a change, takes the rolling-reload lock (a file in a volume that every
  replica mounts; in etcd, a lease-backed queue that spans hosts), tells the
  standby to go (or starts a uwsgi from cold, pinned to the etcd revision),
  waits for it to report READY=1 (sd_notify: the app is loaded and the
  workers are up), then stops the old uwsgi gracefully (its requests in
  flight finish) and lets the lock go. Replicas therefore reload one after
  another, and each keeps serving while it does. With options from etcd,
  where writes go on throughout, the replica first leaves haproxy's
  rotation (its health checks answer 404, as when it stops) until haproxy
  has closed its connections to the old uwsgi, and comes back once that one
  is gone: a write haproxy sends on a connection as uwsgi closes it cannot
  be sent again. A tree under development skips that, to serve an edit in
  well under a second;
* when told to stop (SIGTERM), leaves the rotation in the same way first;
* when the tree does not load (the new uwsgi exits: need-app), or the new
  options do not (any exit before READY=1: a database that does not answer
  fails its check), stops the old uwsgi as well and closes the socket: this
  replica turns unhealthy, haproxy serves from the others, and they stay on
  the code and options they run, because this replica keeps the lock until
  a later change loads. It also records what failed (its digest, beside the
  lock): a replica that gets the lock with that very tree or those options
  does not load them, so a lock holder that goes away (its container
  recreated) does not hand them to the replicas in line; and a replica that
  starts with them loads them under the lock, as a reload;
* while in line for the lock, keeps tending its own uwsgis: it ends when
  the serving one exits, and stops when told to, as it does out of line.

A uwsgi that fails for any other reason (bad settings, no database) ends
this process with uwsgi's exit status, as a replica without a tree would;
with etcd, so does one that fails at the replica's first start, unless it
loads options that failed elsewhere (it then waits for a change, as above).
In etcd mode each replica also records in etcd the revision it serves and
its state (placedock-etcd status).
"""

import fcntl
import hashlib
import json
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
IDLE_TIMEOUT = 15  # out of rotation, how long haproxy has to close its connections to an old uwsgi
STOP_IDLE_TIMEOUT = 5  # the same when told to stop: within docker stop's 10 s with the drain
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


def changed(old, new, tree):
    paths = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
    names = [os.path.relpath(p, tree) for p in paths[:3]]
    return ", ".join(names) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


class Tree:
    """PLACEMENT_SRC: the placement tree, looked at every POLL seconds; the
    lock is a file that every replica's volume shares, and the failed
    record a file beside it."""

    what = "the tree"
    fails = "the tree does not load"
    # A reload is not taken out of haproxy's rotation first: an edit is served
    # within a second, at the cost of a write that meets the old uwsgi's
    # closing connection failing (reads are sent again).
    drains = False
    lock_poll = 0.02  # a local flock: a look costs nothing

    def __init__(self, path):
        self.path = path
        self.lock = None  # open file while this replica is in line or holds the lock

    @property
    def poll(self):
        return POLL

    def announce(self):
        log(f"PLACEMENT_SRC={self.path}: serving this tree; a change to placement/**/*.py reloads it")

    def look(self):
        return snapshot(self.path)

    def digest(self, state):
        return digest(state)

    def changed(self, old, new):
        return changed(old, new, self.path)

    def environment(self, state):
        return {}

    def fatal(self, status, first):
        """Whether a new uwsgi's exit ends the replica: only a tree that does not load is waited out."""
        return status != FAILED_APP

    def try_lock(self):
        if self.lock is None:
            self.lock = open(LOCK)  # the image makes it; closing the file lets the lock go
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def unlock(self):
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def failed_digest(self):
        try:
            return failed_record().read_text().strip()
        except FileNotFoundError:
            return None

    def record_failed(self, state):
        record = failed_record()
        partial = record.with_name(f"failed.{os.getpid()}")
        partial.write_text(digest(state) + "\n")
        os.replace(partial, record)

    def clear_failed(self):
        failed_record().unlink(missing_ok=True)

    def report(self, state, how):
        pass

    def same(self, old, new, how):
        pass

    def close(self):
        self.unlock()


class Options:
    """The options under the etcd prefix (placedock_etcd.py): followed with
    etcd's watch, read at the revision of the last change seen; the lock is
    etcd's lease-backed queue, so it spans every host of a swarm."""

    what = "the options"
    fails = "the options do not load"
    drains = True  # each reload leaves rotation first: writes go on through it
    lock_poll = 0.2  # a look at the queue is a call to etcd
    poll = 0.1

    def __init__(self, settings):
        import placedock_etcd  # in the venv: the image installs it with its entry point

        self.etcd = placedock_etcd
        self.settings = settings
        self.client = settings.client()
        try:
            self.current = placedock_etcd.load(self.client, settings.prefix, cache=settings.cache)
        except placedock_etcd.Unavailable as exc:
            placedock_etcd.fail(str(exc))
        self.session = placedock_etcd.Session(settings)
        self.watcher = placedock_etcd.Watcher(settings, self.current.revision)

    def announce(self):
        log(
            f"options from etcd at {self.client.describe()} under {self.settings.prefix}/ (last changed at revision "
            f"{self.current.change}): a change reloads this replica, one replica at a time"
        )

    def look(self):
        if self.watcher.latest > self.current.revision:
            try:
                self.current = self.etcd.load(self.client, self.settings.prefix, cache=self.settings.cache)
            except self.etcd.Unavailable:
                pass  # the watch saw it; the read is tried again on the next look
        return self.current

    def digest(self, state):
        return state.digest()

    def changed(self, old, new):
        return new.changed(old) or "nothing"

    def environment(self, state):
        return {self.etcd.env_name(self.settings.group, "revision"): str(state.revision)}

    def fatal(self, status, first):
        """Options that do not load are waited out (the rollout stops here),
        except at a replica's first start, where its settings are at fault."""
        return first

    def try_lock(self):
        return self.session.try_lock()

    def unlock(self):
        self.session.unlock()

    def failed_digest(self):
        return self.session.failed_digest()

    def record_failed(self, state):
        self.session.record_failed(state)

    def clear_failed(self):
        self.session.clear_failed()

    def report(self, state, how):
        self.session.report(state.change, how, state.digest()[:12])

    def same(self, old, new, how):
        """A change back to the values served (or to none): nothing to
        reload, and the replica now serves the newer revision."""
        if new.change != old.change:
            self.report(new, how)

    def close(self):
        self.session.close()


class Uwsgi:
    """One uwsgi on the shared socket, and its readiness channel. A standby
    one stops before loading placement until go() (see placedock_wsgi.py)."""

    def __init__(self, command, listener, workdir, standby=False, environment=None):
        self.notify_path = os.path.join(workdir, f"notify-{time.monotonic_ns()}")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        env = {**os.environ, **(environment or {}), "NOTIFY_SOCKET": self.notify_path, "UWSGI_PROTOCOL": "http"}
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

    def connections(self, port):
        """Established TCP connections on `port` that this uwsgi's processes
        (the master and its workers) hold: haproxy's, idle or busy."""
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return 0
        inodes = set()
        for process in (pid, *children):
            try:
                for fd in os.scandir(f"/proc/{process}/fd"):
                    target = os.readlink(fd.path)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
            except OSError:
                continue
        held = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                fields = row.split()
                # local address:port in hex, state 01 = ESTABLISHED, inode
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    held += 1
        return held

    def go(self, environment):
        """A standby: load placement now, with these variables set (the etcd
        revision to read: a standby starts before it is known)."""
        os.write(self.go_fd, b"go" + (json.dumps(environment).encode() if environment else b""))
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
    def __init__(self, source, command):
        self.source = source
        self.command = command
        self.workdir = tempfile.mkdtemp(prefix="placedock-reload-")
        self.listener = None
        self.current = None  # the Uwsgi serving now
        self.standby = None  # the next one, warm, waiting for a go
        self.standby_due = None  # when to start the next standby
        self.retiring = []  # old ones finishing their requests
        self.locked = False  # whether this replica holds the reload lock
        self.loaded = None  # the state (tree snapshot, options) the current uwsgi loaded
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
        meanwhile (another replica may hold it for long: a change that does
        not load). False if asked to stop, or if the serving uwsgi exits, first."""
        while not self.locked:
            if self.source.try_lock():
                self.locked = True
                break
            self.tend()
            if self.stopping() or self.current_exited():
                self.source.unlock()
                return False
            time.sleep(self.source.lock_poll)
        return True

    def release_lock(self):
        self.source.unlock()
        self.locked = False

    def retire(self, uwsgi):
        if uwsgi is not None:
            uwsgi.stop()
            self.retiring.append(uwsgi)

    def start(self, state):
        """Serve `state` from a new uwsgi; once it is ready, retire the old one.
        Returns uwsgi's exit status if the new one failed, else None."""
        if self.listener is None:
            self.listener = socket.create_server(("0.0.0.0", PORT), backlog=128)  # noqa: S104 - haproxy's
        environment = self.source.environment(state)
        stopping_flag = os.environ.get("PLACEDOCK_STOPPING")
        if stopping_flag:  # back in rotation once this one serves (left when the last one failed)
            Path(stopping_flag).unlink(missing_ok=True)
        new, self.standby = self.standby, None
        if new is not None and new.alive():
            new.go(environment)
        else:
            self.retire(new)
            new = Uwsgi(self.command, self.listener, self.workdir, environment=environment)
        self.loaded = state
        self.source.report(state, "loading")
        if new.wait_ready(self.stopping):
            old = self.current
            if old is not None and self.source.drains:
                # haproxy reuses idle connections to a replica for any client
                # (http-reuse always): one the old uwsgi closes as a write is
                # sent on it fails that write. So out of rotation first, and
                # back once the old one is gone (the new one answers meanwhile).
                self.leave_rotation("reloaded")
                self.wait_unused(old)
                self.retire(old)
                try:
                    old.process.wait(timeout=READY_TIMEOUT)
                except subprocess.TimeoutExpired:
                    log("the old uwsgi has not stopped: back in rotation anyway")
                if stopping_flag:
                    Path(stopping_flag).unlink(missing_ok=True)
            else:
                self.retire(old)
            self.current = new
            self.standby_due = time.monotonic() + STANDBY_DELAY
            if self.locked:
                self.source.clear_failed()
            self.source.report(state, "serving")
            return None
        # Out of haproxy's rotation first, as when stopping (a request sent on
        # a connection as it closes would fail), then refused at once from
        # now on: haproxy and the healthcheck see it down. A standby would
        # keep the socket open, so none is kept while down.
        self.leave_rotation("the new uwsgi failed")
        if self.current is not None and self.source.drains:
            self.wait_unused(self.current)
        self.retire(self.current)
        self.current = None
        self.listener.close()
        self.listener = None
        self.standby_due = None
        status = new.process.wait()
        self.source.report(state, "failed")
        if self.locked and not self.source.fatal(status, first=False):
            self.source.record_failed(state)
        return status

    def tend(self):
        """Reap retired uwsgis; start the standby when it is due."""
        self.retiring = [u for u in self.retiring if u.alive()]
        if self.standby_due is not None and time.monotonic() >= self.standby_due:
            self.standby_due = None
            self.standby = Uwsgi(self.command, self.listener, self.workdir, standby=True)

    def wait_unused(self, uwsgi, timeout=IDLE_TIMEOUT):
        """Out of rotation, wait until haproxy has closed its connections to
        `uwsgi` (it closes idle ones within seconds, pool-purge-delay): a
        connection uwsgi closes as it stops may be one haproxy is sending a
        request on at that moment, and a write cannot be sent again."""
        port = self.listener.getsockname()[1]
        started = time.monotonic()
        while uwsgi.connections(port) and time.monotonic() - started < timeout:
            time.sleep(0.1)
        left = uwsgi.connections(port)
        if left:
            log(f"the old uwsgi still holds {left} of haproxy's connections after {timeout}s: stopping it anyway")

    def leave_rotation(self, why):
        """Take this replica out of haproxy's rotation while its uwsgi still
        serves, as the entrypoint does before stopping one of its own: the
        health checks turn to 404 (placedock_wsgi.py) and, PLACEMENT_STOP_DRAIN
        seconds later, no request is being sent on a connection that closes."""
        flag = os.environ.get("PLACEDOCK_STOPPING")
        seconds = int(os.environ.get("PLACEMENT_STOP_DRAIN") or 0)
        if not flag or not seconds or self.current is None or not self.current.alive():
            return
        try:
            Path(flag).touch()
        except OSError as exc:
            log(f"{why}: cannot write {flag} ({exc}), so leaving without leaving rotation first")
            return
        log(f"{why}: out of haproxy's rotation, stopping the serving uwsgi in {seconds}s")
        time.sleep(seconds)

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
        self.source.announce()
        try:
            state = self.source.look()
            # What failed under the lock (in this replica before it was
            # recreated, perhaps): loaded under the lock too, and kept on
            # failure, so that the replicas in line do not load it meanwhile.
            status = None  # stays so if asked to stop while in line
            if self.source.digest(state) != self.source.failed_digest() or self.take_lock():
                status = self.start(state)
                if status is None:
                    self.release_lock()
                elif not self.source.fatal(status, first=not self.locked):
                    log(f"{self.source.fails} (see above): this replica is out of rotation until the next change")
                    status = None
                if status is None:
                    status = self.watch()
        finally:
            self.release_lock()
            if self.stopping():
                self.leave_rotation("SIGTERM")
                if self.current is not None and self.listener is not None:
                    self.wait_unused(self.current, timeout=STOP_IDLE_TIMEOUT)
            stopped = self.shutdown()
            self.source.close()
        return stopped if status is None else status

    def watch(self):
        while not self.stopping():
            time.sleep(self.source.poll)
            self.tend()
            if self.current is not None and not self.current.alive():
                log(f"uwsgi exited with status {self.current.process.returncode}")
                return self.current.process.returncode
            state = self.source.look()
            if state == self.loaded:
                self.source.same(self.loaded, state, "serving" if self.current is not None else "failed")
                self.loaded = state
                continue
            time.sleep(0.05)  # let an editor finish writing
            if self.source.look() != state:
                continue
            what = self.source.changed(self.loaded, state)
            asked = time.monotonic()
            if not self.take_lock():
                if self.current_exited():
                    log(f"uwsgi exited with status {self.current.process.returncode}")
                    return self.current.process.returncode
                break
            got = time.monotonic()
            state = self.source.look()  # with whatever changed while we waited
            if state == self.loaded:
                self.release_lock()
                self.source.same(self.loaded, state, "serving")
                self.loaded = state
                log(f"{what} changed, and back again while in line: nothing to reload")
                continue
            if self.source.digest(state) == self.source.failed_digest():
                self.release_lock()
                self.loaded = state
                log(
                    f"{what} changed: not loaded: {self.source.what} did not load in another replica (see its log); "
                    "this replica keeps what it serves until a change loads"
                )
                continue
            status = self.start(state)
            done = time.monotonic()
            if status is None:
                self.release_lock()
                log(f"{what} changed: reloaded in {done - got:.2f}s, after {got - asked:.2f}s in line")
            elif not self.source.fatal(status, first=False):
                log(
                    f"{what} changed: {self.source.fails} (see above): this replica is out of rotation, "
                    "and the other replicas keep theirs until a change here loads"
                )
            elif not self.stopping():
                log(f"uwsgi exited with status {status}")
                return status
        return None


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: reloader.py COMMAND...")
    if os.environ.get("PLACEMENT_SRC"):
        source = Tree(Path(os.environ["PLACEMENT_SRC"]))
    else:
        import placedock_etcd

        source = Options(placedock_etcd.Settings())
    sys.exit(Reloader(source, sys.argv[1:]).run())


if __name__ == "__main__":
    main()
