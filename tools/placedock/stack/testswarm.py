"""A Docker Swarm of test hosts on this machine, and nothing left of it afterwards.

    placedock testswarm up [--nodes 3]          make the test hosts and their swarm; print its settings
    placedock testswarm down                    remove every trace of it
    placedock testswarm run [--deploy] [--timeout S] -- COMMAND...
                                                      up (and deploy the stack), COMMAND, down

Each test host is a network namespace (placedock-node-N, with its own
address 10.99.0.1N on the bridge placedock0, whose host side is 10.99.0.1)
running its own Docker engine: dockerd entered into the namespace with
nsenter, its own data root, exec root, socket and hostname (node-N). Node 1
is the manager and is labelled placedock.database=true and
placedock.keystone=true; the others join as
workers. The image registry runs on this machine's own engine
(placedock-testswarm-registry), with credentials like any other
(placedock swarm registry): the nodes pull from 10.99.0.1:5050, this engine
pushes to 127.0.0.1:15050, and both are logged in, in a DOCKER_CONFIG of the
test swarm's own. Its secrets are strong and random (placedock swarm secrets),
recorded in its own PLACEDOCK_SWARM_STATE, where the tests read them. Traffic
stays on the bridge and loopback.

`down` works from any state a failed `up` left: engines are stopped by their
pid, then anything else still running under their exec roots; their mounts
are unmounted, the namespaces, bridge, firewall rule, registry container and
volume, and every data directory removed. Needs root (ip, nsenter, iptables).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from placedock.cli import command_parser
from placedock.stack import compose as stack
from placedock.stack import swarm

BRIDGE = "placedock0"
NETNS = "placedock-node-"
SUBNET = "10.99.0"
HOST_ADDRESS = f"{SUBNET}.1"
STATE = Path("/var/lib/placedock-testswarm")  # data roots and logs
RUN = Path("/run/placedock-testswarm")  # exec roots, sockets, pid files
REGISTRY = "placedock-testswarm-registry"
REGISTRY_PULL = f"{HOST_ADDRESS}:5050"
REGISTRY_PUSH = "127.0.0.1:15050"
# Swarm's overlay networks, inside the nodes: clear of the hosts' subnet.
OVERLAY_POOL = "10.10.0.0/16"
# This machine's kernel cannot do the encrypted overlay's IPsec: the nodes'
# dockerd log "Failed Adding rSA{... Aead: {Name: rfc4106(gcm(aes)) ...}:
# function not implemented", and every packet between nodes is dropped. The
# test swarm deploys with --unencrypted-overlay (swarm/encrypted.yaml).
ENCRYPTED_OVERLAY = False


def log(message):
    print(f"testswarm: {message}", file=sys.stderr, flush=True)


def sh(*args, check=True):
    done = subprocess.run(args, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def address(n):
    return f"{SUBNET}.{10 + n}"


def socket(n):
    return f"unix://{RUN}/node-{n}.sock"


def node_docker(n, *args, check=True):
    return sh("docker", "-H", socket(n), *args, check=check)


def engine_answers(n):
    return subprocess.run(["docker", "-H", socket(n), "info"], capture_output=True).returncode == 0


def container_logs(since=None, service=None):
    """(node, container name, its log with Docker's timestamps) for every
    container, running or exited, on every test host that answers; only the
    tasks of `service` (e.g. placedock_placement) if given. Read from each
    node's engine: `docker service logs` can wait for good on a task whose
    log never ends (seen here during rolling updates)."""
    for path in sorted(RUN.glob("node-*.sock")):
        n = int(path.stem.split("-")[1])
        if not engine_answers(n):
            continue
        where = ["--filter", f"label=com.docker.swarm.service.name={service}"] if service else []
        for line in node_docker(n, "ps", "-a", *where, "--format", "{{.ID}} {{.Names}}", check=False).splitlines():
            container, name = line.split()
            try:
                done = subprocess.run(
                    ["docker", "-H", socket(n), "logs", "--timestamps", *(["--since", str(since)] if since else []),
                     container],
                    capture_output=True, text=True, timeout=30,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                yield f"node-{n}", name, "(docker logs: no end after 30 s)\n"
                continue
            yield f"node-{n}", name, done.stdout + done.stderr


def keep_logs():
    """Every container's whole log on every test host, one file each
    (node-N.NAME.log), in a new directory (stack.log_dir); that directory."""
    where = stack.log_dir("testswarm")
    for node, name, text in container_logs():
        (where / f"{node}.{name}.log").write_text(text)
    return where


def settings(nodes):
    """What a command needs to use the test swarm (placedock swarm, the tests)."""
    return {
        "PLACEDOCK_SWARM_HOST": socket(1),
        # The registry's credentials, this test swarm's only.
        "DOCKER_CONFIG": str(RUN / "docker-config"),
        "PLACEDOCK_SWARM_STATE": str(RUN / "state"),
        # The passwords `swarm.py secrets` made, for the tests' tokens.
        "PLACEDOCK_CREDENTIALS": str(RUN / "state" / f"{swarm.STACK}-secrets.env"),
        "PLACEDOCK_REGISTRY": REGISTRY_PULL,
        "PLACEDOCK_REGISTRY_PUSH": REGISTRY_PUSH,
        "PLACEDOCK_SWARM_NODES": " ".join(f"node-{n}={address(n)}" for n in range(1, nodes + 1)),
        # Every node is a front door (haproxy runs on each): node 1's.
        "PLACEMENT_URL": f"http://{address(1)}:8778",
        "HAPROXY_STATS_URL": f"http://{address(1)}:8404",
        # keystone mode, swarm.py deploy's default.
        "PLACEDOCK_AUTH_MODE": "keystone",
        # Keystone mode (swarm/keystone.yaml): keystone runs on node 1.
        "PLACEDOCK_PUBLIC_HOST": address(1),
        "KEYSTONE_URL": f"http://{address(1)}:5000/v3",
    }


def make_node(n):
    """Namespace, link, address, then the node's dockerd (left running)."""
    netns = f"{NETNS}{n}"
    sh("ip", "netns", "add", netns)
    sh("ip", "link", "add", f"pdnode-{n}", "type", "veth", "peer", "name", "eth0", "netns", netns)
    sh("ip", "link", "set", f"pdnode-{n}", "master", BRIDGE, "up")
    sh("ip", "-n", netns, "addr", "add", f"{address(n)}/24", "dev", "eth0")
    sh("ip", "-n", netns, "link", "set", "eth0", "up")
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    data, run = STATE / f"node-{n}", RUN / f"node-{n}"
    data.mkdir(parents=True)
    run.mkdir(parents=True)
    dockerd = [
        "dockerd", f"--data-root={data}", f"--exec-root={run}", f"--host={socket(n)}",
        f"--pidfile={RUN}/node-{n}.pid", f"--bip=172.30.{n}.1/24", f"--insecure-registry={REGISTRY_PULL}",
    ]  # fmt: skip
    # nsenter, not `ip netns exec`: that remounts /sys, and dockerd then finds
    # no cgroups. unshare --uts: the node's own hostname, which swarm shows.
    command = [
        "nsenter", f"--net=/run/netns/{netns}", "unshare", "--uts",
        "sh", "-c", f'hostname node-{n} && exec "$@"', f"node-{n}",
    ]  # fmt: skip
    with open(STATE / f"node-{n}.log", "ab") as out:
        subprocess.Popen([*command, *dockerd], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)


def exists():
    return Path(f"/sys/class/net/{BRIDGE}").exists() or RUN.exists()


def check_host():
    """Exit with one line when the test swarm cannot be made here."""
    if exists():
        sys.exit("testswarm: a test swarm is already here: `placedock testswarm down` removes it")
    if os.geteuid() != 0:
        sys.exit("testswarm: needs root (ip netns, nsenter, iptables)")
    missing = [tool for tool in ("ip", "nsenter", "unshare", "iptables", "dockerd") if not shutil.which(tool)]
    if missing:
        sys.exit(f"testswarm: {', '.join(missing)} not found (Debian: iproute2, util-linux, iptables, docker.io)")


def up(nodes):
    """Make the test hosts and their swarm; what failed on the way is removed again."""
    check_host()
    try:
        return make_swarm(nodes)
    except BaseException:
        down()
        raise


def make_swarm(nodes):
    started = time.monotonic()
    RUN.mkdir(parents=True)
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    # Docker's FORWARD policy is DROP, and bridged frames pass iptables: let
    # the nodes talk to each other (swarm's 2377, 7946, 4789/udp).
    sh("iptables", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")
    for n in range(1, nodes + 1):
        make_node(n)
    os.environ.update(settings(nodes))
    swarm.start_registry(REGISTRY, [REGISTRY_PULL, REGISTRY_PUSH], volume=REGISTRY)
    for n in range(1, nodes + 1):
        stack.wait_until(lambda n=n: engine_answers(n), timeout=60, step=0.2, what=f"node-{n}'s engine")
    # Logged in where each pushes or pulls: this engine, and the manager,
    # whose engine reaches the nodes' address of the registry.
    swarm.login(REGISTRY_PUSH)
    swarm.login(REGISTRY_PULL, host=socket(1))
    node_docker(1, "swarm", "init", "--advertise-addr", address(1), "--default-addr-pool", OVERLAY_POOL)
    token = node_docker(1, "swarm", "join-token", "-q", "worker")
    for n in range(2, nodes + 1):
        node_docker(n, "swarm", "join", "--token", token, "--advertise-addr", address(n), f"{address(1)}:2377")
    # The stateful services' node: mariadb's data, keystone's keys.
    labels = ["--label-add", "placedock.database=true", "--label-add", "placedock.keystone=true"]
    node_docker(1, "node", "update", *labels, "node-1")
    # An etcd member per node, for deploy --etcd (swarm/etcd.yaml).
    for n in range(1, min(nodes, 3) + 1):
        node_docker(1, "node", "update", "--label-add", f"placedock.etcd={n}", f"node-{n}")

    def ready():
        return node_docker(1, "node", "ls", "--format", "{{.Status}}").split() == ["Ready"] * nodes

    stack.wait_until(ready, timeout=60, step=0.5, what=f"{nodes} nodes Ready")
    log(f"{nodes} nodes up and in one swarm in {time.monotonic() - started:.1f}s")
    return settings(nodes)


def running_under(path):
    """Pids of the processes whose command line names `path` (a node's
    containerd, shims, ...)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return [pid for pid in found if pid != os.getpid()]


def alive(pid):
    try:
        # An engine this process started (`run`) is its child: reap it once it
        # exited, or it stays a zombie that looks alive.
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def signal_pid(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def stop(pids, timeout):
    for pid in pids:
        signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            signal_pid(pid, signal.SIGKILL)


def mounts_under(*roots):
    """Mount points below any of `roots`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(root) or point.startswith(f"{root}/") for root in roots):
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def down():
    started = time.monotonic()
    # Engines first, by their pid files: each stops its containers as it goes.
    pids = []
    for pidfile in RUN.glob("node-*.pid") if RUN.exists() else ():
        try:
            pids.append(int(pidfile.read_text()))
        except (OSError, ValueError):
            continue
    stop(pids, timeout=30)
    # Whatever an engine left: its containerd, shims, a dockerd with no pid file.
    stop(running_under(RUN), timeout=10)
    for point in mounts_under(RUN, STATE):
        subprocess.run(["umount", "-l", point], capture_output=True)
    for netns in sh("ip", "netns", "list", check=False).splitlines():
        name = netns.split()[0]
        if name.startswith(NETNS):
            sh("ip", "netns", "delete", name)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        sh("ip", "link", "delete", BRIDGE)
    while subprocess.run(["iptables", "-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"],
                         capture_output=True).returncode == 0:  # fmt: skip
        pass
    stack.remove(REGISTRY)
    subprocess.run(["docker", "volume", "rm", "-f", REGISTRY], capture_output=True)
    # The tags this engine pushed under (the images themselves stay).
    tags = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", check=False).split()
    pushed = [tag for tag in tags if tag.startswith(f"{REGISTRY_PUSH}/")]
    if pushed:
        sh("docker", "rmi", *pushed, check=False)
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(STATE, ignore_errors=True)
    left = [str(p) for p in (RUN, STATE) if p.exists()] + mounts_under(RUN, STATE) + running_under(RUN)
    if left:
        sys.exit(f"testswarm: could not remove {left}")
    log(f"removed in {time.monotonic() - started:.1f}s")


def run(args):
    """up, optionally push and deploy the stack, COMMAND with the settings, down."""
    if args.skip_unless_root and os.geteuid() != 0:
        log("skipped: the test hosts need root (ip netns, nsenter, iptables); as root: tox -e swarm")
        return 0
    status = 1
    # A SIGTERM (CI's timeout, tox interrupted) still removes the test hosts.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    deadline = time.monotonic() + args.timeout
    check_host()  # before the try: a test swarm that is already here is not ours to remove
    try:
        env = up(args.nodes)
        os.environ.update(env)
        if args.deploy:
            swarm.push()
            # docs/several-hosts.md's safe path: strong random secrets, keystone mode.
            swarm.make_secrets()
            swarm.deploy("keystone", replicas=3, timeout=240, encrypted=ENCRYPTED_OVERLAY)
        try:
            status = subprocess.run(
                args.command, env={**os.environ, **env}, timeout=max(deadline - time.monotonic(), 1)
            ).returncode
        except subprocess.TimeoutExpired:
            log(f"COMMAND did not end within the run's {args.timeout:g}s: stopped")
            status = 124
    finally:
        if status != 0 and RUN.exists():
            swarm.dump()
            log(f"every container's whole log, on every node, is kept in {keep_logs()}")
        down()
    return status


def build_parser():
    parser, sub = command_parser("testswarm", __doc__, subcommands="action")
    up_parser = sub.add_parser("up", help="make the test hosts and their swarm")
    run_parser = sub.add_parser("run", help="up, COMMAND, down")
    for each in (up_parser, run_parser):
        each.add_argument("--nodes", type=int, default=3)
    run_parser.add_argument(
        "--deploy", action="store_true", help="push the images, make secrets, deploy (keystone mode)"
    )
    run_parser.add_argument("--timeout", type=float, default=480, help="seconds for the whole run, down excluded")
    run_parser.add_argument(
        "--skip-unless-root", action="store_true", help="not root: say so in one line and exit 0 (tox's swarm envs)"
    )
    run_parser.add_argument("command", nargs="+")
    sub.add_parser("down", help="remove every trace of the test swarm")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.action == "up":
        for name, value in up(args.nodes).items():
            print(f"export {name}={json.dumps(value)}")
    elif args.action == "down":
        down()
    else:
        return run(args)
    return 0
