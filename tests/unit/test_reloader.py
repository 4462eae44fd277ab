"""placement/reloader.py's turns at the rolling-reload lock, with no stack:
each replica is a reloader process whose uwsgi is a fake (it loads the tree's
placement/app.py, fails like uwsgi's need-app when that says "broken", and
says READY=1 otherwise), all sharing one tree and one lock file, as the
replicas of compose.src.yaml share the bind mount and the placement-reload
volume. A replica in line for the lock still tends its own uwsgi; a lock
holder out of rotation that is recreated neither lets the replicas in line
load the broken tree nor loads it itself without the lock."""

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from placedock.stack.compose import wait_until

RELOADER = Path(__file__).resolve().parents[2] / "placement" / "reloader.py"

# reloader.py with the lock file given, any free port, and no standby (each
# start is from cold: one fake uwsgi per replica at a time).
RUN = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("reloader", sys.argv[1])
reloader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reloader)
reloader.LOCK = Path(sys.argv[2])
reloader.PORT = 0
reloader.STANDBY_DELAY = 3600
sys.argv = ["reloader.py", *sys.argv[3:]]
reloader.main()
"""

FAKE_UWSGI = """
import os, signal, socket, sys
tree = os.environ["PLACEMENT_SRC"]
with open(os.path.join(tree, "placement", "app.py")) as app:
    code = app.read()
if "broken" in code:
    print("fake uwsgi: placement does not load", file=sys.stderr, flush=True)
    sys.exit(22)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with open(os.path.join(os.environ["FAKE_SERVING"], str(os.getpid())), "w") as serving:
    serving.write(code)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    signal.pause()
"""


class Replica:
    """A reloader process in its own process group (its container): its log,
    and the fake uwsgis that served, one file each (pid: the code served)."""

    def __init__(self, where, name, tree, lock):
        self.log = where / f"{name}.log"
        self.serving_dir = where / f"{name}-serving"
        self.serving_dir.mkdir()
        fake = where / "fake_uwsgi.py"
        fake.write_text(FAKE_UWSGI)
        env = {**os.environ, "PLACEMENT_SRC": str(tree), "FAKE_SERVING": str(self.serving_dir)}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", RUN, str(RELOADER), str(lock), sys.executable, str(fake)],
                env=env,
                stderr=log,
                start_new_session=True,
            )

    def said(self, text):
        return text in self.log.read_text()

    def serving(self):
        """{pid: code} of its fake uwsgis that are alive (not exited, not zombies)."""
        found = {}
        for path in self.serving_dir.iterdir():
            try:
                state = Path(f"/proc/{path.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                found[int(path.name)] = path.read_text()
        return found

    def in_line_for(self, lock):
        """Whether it has the lock file open: it holds the lock or waits for it."""
        fds = Path(f"/proc/{self.process.pid}/fd")
        return any(os.path.realpath(fd) == str(lock) for fd in fds.iterdir())

    def kill(self):
        """The container is removed: its whole process group, at once."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@pytest.fixture
def replicas(tmp_path):
    """start(name): a replica on the shared tree and lock; all stopped afterwards."""
    tree = tmp_path / "tree"
    (tree / "placement").mkdir(parents=True)
    (tree / "placement" / "app.py").write_text("version = 1\n")
    lock = tmp_path / "lock"
    lock.touch()
    started = []

    def start(name):
        started.append(Replica(tmp_path, name, tree, lock))
        return started[-1]

    start.tree, start.lock = tree, lock
    yield start
    for replica in started:
        replica.stop()


def edit(tree, code):
    (tree / "placement" / "app.py").write_text(code)


def lock_is_free(lock):
    with open(lock) as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_a_replica_in_line_for_the_lock_notices_its_uwsgi_exit(replicas):
    replica = replicas("r1")
    wait_until(lambda: replica.serving(), timeout=30, what="r1 serving")
    (pid,) = replica.serving()
    with open(replicas.lock) as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # another replica is reloading
        edit(replicas.tree, "version = 2\n")
        wait_until(lambda: replica.in_line_for(replicas.lock), timeout=30, what="r1 in line for the lock")
        os.kill(pid, signal.SIGKILL)
        # As a replica not in line does: it ends with its uwsgi's status, so
        # docker restarts it, rather than holding a socket no uwsgi serves.
        wait_until(
            lambda: replica.process.poll() is not None,
            timeout=10,
            what="r1, in line for the lock, ending after its uwsgi was killed",
        )
    assert replica.process.returncode != 0
    assert replica.said("uwsgi exited with status")


def test_a_recreated_lock_holder_loads_a_broken_tree_under_the_lock_and_nobody_else_does(replicas):
    first, second = replicas("r1"), replicas("r2")
    wait_until(lambda: first.serving() and second.serving(), timeout=30, what="both replicas serving")
    edit(replicas.tree, "broken = (\n")
    failed = "changed: the tree does not load"
    wait_until(lambda: first.said(failed) or second.said(failed), timeout=30, what="one replica failing to load it")
    holder, in_line = (first, second) if first.said(failed) else (second, first)
    wait_until(lambda: in_line.in_line_for(replicas.lock), timeout=30, what="the other in line for the lock")
    holder.kill()
    # The lock is free now: the replica in line takes it, and must not load
    # the tree that did not load in the replica that held it.
    skipped = "did not load in another replica"
    wait_until(lambda: in_line.said(skipped) or in_line.said(failed), timeout=30, what="the replica in line deciding")
    assert not in_line.said(failed), in_line.log.read_text()
    assert list(in_line.serving().values()) == ["version = 1\n"]
    # Recreated, the holder loads the broken tree under the lock, and keeps it.
    recreated = replicas("r1-recreated")
    wait_until(lambda: recreated.said("does not load"), timeout=30, what="the recreated replica's first start")
    assert not lock_is_free(replicas.lock), "the recreated replica loaded a broken tree without the lock"
    assert list(in_line.serving().values()) == ["version = 1\n"]
    # A fix loads in the recreated replica first, then in the other.
    edit(replicas.tree, "version = 3\n")
    wait_until(
        lambda: list(recreated.serving().values()) == list(in_line.serving().values()) == ["version = 3\n"],
        timeout=30,
        what="the fix served by both",
    )
