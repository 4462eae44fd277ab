"""placedock on a Docker Swarm of three test hosts (placedock testswarm run
--deploy: docs/several-hosts.md's safe path, so strong random secrets, a registry that
wants credentials, keystone mode, 3 placement replicas). The front door is
node-1's haproxy; node-1 also holds the database and keystone. The tests that
change the swarm do it while readers and writers go through that front door,
and print what they measured.

    tox -e swarm       (runs tests/test_gabbits.py first, through the same front door)
"""

import csv
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections import Counter

import pytest
import requests
from placedock.stack import compose as stack
from placedock.stack import swarm, testswarm
from placedock.stack.compose import wait_until
from placedock.traffic import ab
from placedock.traffic.ledger import Traffic, unbalanced, vcpu_providers

REPLICAS = 3
PLACEMENT = swarm.service("placement")
NODES = dict(item.split("=") for item in os.environ.get("PLACEDOCK_SWARM_NODES", "").split())
DB_NODE = "node-1"  # labelled placedock.database=true and placedock.keystone=true by placedock testswarm
READ_PATHS = ("/", "/resource_providers?name=swarm-none", "/traits?name=startswith:HW_CPU", "/resource_classes")
SWARM_PY = [sys.executable, "-m", "placedock", "swarm"]

if not os.environ.get("PLACEDOCK_SWARM_HOST"):
    raise RuntimeError("PLACEDOCK_SWARM_HOST is not set: run these with tox -e swarm (placedock testswarm run)")


def made():
    """{VARIABLE: value} of the secrets `swarm.py secrets` made for the test swarm."""
    return stack.settings_file(os.environ["PLACEDOCK_CREDENTIALS"])


def stats_url():
    """node-1's haproxy stats, with the stats password."""
    url = os.environ["HAPROXY_STATS_URL"]
    return url.replace("://", f"://placedock:{made()['HAPROXY_STATS_PASSWORD']}@", 1)


def tasks(service=PLACEMENT):
    """The service's tasks meant to run: [(task id, node, state, image)];
    the state without its age (Running, Starting, ...), the image without its digest."""
    out = swarm.manager(
        "service", "ps", service, "--no-trunc", "--filter", "desired-state=running",
        "--format", "{{.ID}}\t{{.Node}}\t{{.CurrentState}}\t{{.Image}}",
    )  # fmt: skip
    found = []
    for line in out.splitlines():
        task_id, node, state, image = line.split("\t")
        found.append((task_id, node, state.split()[0], image.split("@")[0]))
    return found


def running(service=PLACEMENT):
    return [task for task in tasks(service) if task[2] == "Running"]


def up_count():
    try:
        return len(stack.up_servers(stats_url()))
    except OSError:
        return -1


def settled(replicas, avoid=None):
    """`replicas` tasks running (none on node `avoid`), all UP in the front door."""
    now = running()
    return len(now) == replicas and all(node != avoid for _, node, _, _ in now) and up_count() == replicas


def swarm_py(*args, env=None):
    """placedock swarm ARGS as a user runs it: (exit status, stderr)."""
    done = subprocess.run([*SWARM_PY, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    return done.returncode, done.stderr.strip()


@pytest.fixture
def restored():
    """Whatever a test changes, the swarm is back to 3 replicas on 3 active nodes afterwards."""
    yield
    for node in NODES:
        swarm.manager("node", "update", "--availability", "active", node)
    swarm.manager("service", "scale", "--detach", f"{PLACEMENT}={REPLICAS}")
    wait_until(lambda: settled(REPLICAS), timeout=90, step=0.5, what="3 replicas back")


def test_keystone_by_default_replicas_spread_and_every_node_a_front_door(admin_headers):
    placed = running()
    nodes = Counter(node for _, node, _, _ in placed)
    print(f"deploy: placement tasks per node {dict(nodes)}; front door on node-1 has {up_count()} UP")
    assert len(placed) == REPLICAS
    assert len(nodes) >= 2, nodes
    assert up_count() == REPLICAS
    for name, address in NODES.items():
        url = f"http://{address}:8778/resource_providers"
        assert requests.get(url, headers=admin_headers, timeout=10).status_code == 200, name
        # No token, or noauth2's admin token: keystone says who you are first.
        assert requests.get(url, timeout=10).status_code == 401, name
        assert requests.get(url, headers={"x-auth-token": "admin"}, timeout=10).status_code == 401, name
    # Only the database's node holds the database; keystone's node (the same
    # here) keystone and memcached, which a drain of any other never moves.
    for service in ("mariadb", "keystone", "memcached"):
        assert [node for _, node, _, _ in running(swarm.service(service))] == [DB_NODE], service


def open_ports(address, ports, batch=500, timeout=2.0):
    """The TCP ports of ADDRESS that accept a connection: non-blocking
    connects, BATCH at a time, each answered by a SYN-ACK or a reset (or
    given up after TIMEOUT, as a filtered port)."""
    found = set()
    ports = list(ports)
    for start in range(0, len(ports), batch):
        pending = {}
        poller = select.epoll()
        for port in ports[start : start + batch]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((address, port))
            poller.register(sock.fileno(), select.EPOLLOUT)
            pending[sock.fileno()] = (sock, port)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for fd, _ in poller.poll(max(deadline - time.monotonic(), 0)):
                sock, port = pending.pop(fd)
                poller.unregister(fd)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    found.add(port)
                sock.close()
        for sock, _ in pending.values():
            sock.close()
        poller.close()
    return found


def readme_ports():
    """The TCP ports docs/several-hosts.md's "On your hosts" says to open."""
    readme = (stack.ROOT / "docs" / "several-hosts.md").read_text()
    section = readme[readme.index("### On your hosts") :].split("\n### ", 1)[0]
    return {int(port) for port in re.findall(r"\b(\d{4,5})/tcp", section)}


def test_port_scan_of_every_node_finds_only_the_readme_ports_each_wanting_credentials():
    listed = readme_ports()
    started = time.monotonic()
    found = {name: open_ports(address, range(1, 65536)) for name, address in NODES.items()}
    print(
        f"port scan, TCP 1-65535 of {len(NODES)} nodes in {time.monotonic() - started:.1f}s: {found}; "
        f"docs/several-hosts.md lists {sorted(listed)}"
    )
    for name, ports in found.items():
        assert ports <= listed, (name, sorted(ports - listed))
        assert {7946, 8778, 8404} <= ports, (name, ports)
    assert {2377, 5000} <= found[DB_NODE]
    for name, address in NODES.items():
        # The version document (/) needs no token, as upstream; the API does.
        assert requests.get(f"http://{address}:8778/resource_providers", timeout=5).status_code == 401, name
        for path in ("/stats", "/metrics"):
            assert requests.get(f"http://{address}:8404{path}", timeout=5).status_code == 401, (name, path)
            auth = ("placedock", made()["HAPROXY_STATS_PASSWORD"])
            assert requests.get(f"http://{address}:8404{path}", auth=auth, timeout=5).status_code == 200, (name, path)


def test_registry_refuses_anonymous_push_and_deletes():
    repo = f"placedock/probe-{uuid.uuid4().hex[:8]}"
    auth = (swarm.REGISTRY_USER, swarm.registry_password())
    seen = {}
    for address in (os.environ["PLACEDOCK_REGISTRY"], os.environ["PLACEDOCK_REGISTRY_PUSH"]):
        base = f"http://{address}/v2"
        anonymous = requests.post(f"{base}/{repo}/blobs/uploads/", timeout=5)
        assert anonymous.status_code == 401, (address, anonymous.status_code)
        assert requests.get(f"{base}/_catalog", timeout=5).status_code == 401
        upload = requests.post(f"{base}/{repo}/blobs/uploads/", auth=auth, timeout=5)
        assert upload.status_code == 202, (address, upload.status_code, upload.text)
        cancelled = requests.delete(urllib.parse.urljoin(base, upload.headers["Location"]), auth=auth, timeout=5)
        assert cancelled.status_code == 204, cancelled.status_code
        # The placement image as the nodes pull it: deletes are off.
        name, tag = stack.image("placement").rsplit(":", 1)
        manifest = requests.head(
            f"{base}/{name}/manifests/{tag}",
            auth=auth,
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=5,
        )
        assert manifest.status_code == 200, manifest.status_code
        digest = manifest.headers["Docker-Content-Digest"]
        deleted = requests.delete(f"{base}/{name}/manifests/{digest}", auth=auth, timeout=5)
        assert deleted.status_code == 405, deleted.status_code
        seen[address] = (anonymous.status_code, upload.status_code, deleted.status_code)
    published = stack.docker("port", "placedock-testswarm-registry").split()
    print(f"registry: anonymous push / authenticated push / delete: {seen}; published on {published}")
    assert sorted(p for p in published if ":" in p) == sorted(
        [os.environ["PLACEDOCK_REGISTRY"], os.environ["PLACEDOCK_REGISTRY_PUSH"]]
    )


def test_deploy_without_its_secrets_exits_with_one_line_and_deploys_nothing():
    env = {"PLACEDOCK_STACK": "nosecrets"}
    status, err = swarm_py("deploy", env=env)
    print(f"deploy without secrets: exit {status}: {err}")
    assert status != 0
    assert len(err.splitlines()) == 1, err
    assert "nosecrets-keystone-admin-password" in err and "placedock swarm secrets" in err, err
    status, err = swarm_py("deploy", "--serve-unauthenticated-to", "10.99.0.1", env=env)
    assert status != 0 and len(err.splitlines()) == 1, err
    assert "nosecrets-placement-db-connection" in err and "nosecrets-haproxy-stats-password" in err, err
    assert "keystone" not in err.split(":")[1], err  # noauth needs only its two
    assert "nosecrets" not in swarm.manager("stack", "ls", "--format", "{{.Name}}").split()


def test_secrets_are_strong_and_random_and_dev_values_only_when_asked(tmp_path):
    dev_values = {var: stack.env_file(env)[var] for var, env in swarm.SECRETS.values() if env}
    try:
        for name, dev in (("probe", False), ("probedev", True)):
            env = {"PLACEDOCK_STACK": name, "PLACEDOCK_SWARM_STATE": str(tmp_path)}
            status, err = swarm_py("secrets", *(["--dev"] if dev else []), env=env)
            assert status == 0, err
            values = stack.settings_file(tmp_path / f"{name}-secrets.env")
            assert set(values) == {var for var, _ in swarm.SECRETS.values()}
            existing = swarm.existing_secrets()
            assert {f"{name}-{secret}" for secret in swarm.SECRETS} <= existing
            for var, value in values.items():
                if dev and var in dev_values:
                    assert value == dev_values[var]
                    continue
                assert value not in dev_values.values(), var
                password = re.sub(r"^.*://[^:]+:([^@]+)@.*$", r"\1", value)
                assert len(password) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", password), var  # 256 bits
            # Once made, never made again.
            status, err = swarm_py("secrets", env=env)
            assert status == 0 and "none, all existed" in err, err
        assert (tmp_path.stat().st_mode & 0o777) == 0o700
        print(
            f"secrets: {len(values)} made per stack, random ones of 256 bits, the saved file readable by its owner only"
        )
    finally:
        for name in ("probe", "probedev"):
            for secret in swarm.SECRETS:
                swarm.manager("secret", "rm", f"{name}-{secret}", check=False)


def test_replicas_beyond_haproxys_slots_are_refused():
    slots = stack.server_slots()
    config = (stack.ROOT / "haproxy" / "haproxy.cfg").read_text()
    assert f"server-template placement- {slots} " in config
    refusals = {
        "deploy --replicas": swarm_py("deploy", "--replicas", str(slots + 1)),
        "PLACEMENT_REPLICAS": swarm_py("deploy", env={"PLACEMENT_REPLICAS": str(slots + 1)}),
        "scale": swarm_py("scale", str(slots + 1)),
        "scale 0": swarm_py("scale", "0"),
    }
    print(f"{slots + 1} replicas: {refusals}")
    for how, (status, err) in refusals.items():
        assert status != 0 and len(err.splitlines()) == 1 and "server slots" in err, (how, err)
    assert len(running()) == REPLICAS


def rendered(files):
    """The stack the compose FILES make, merged and interpolated (docker compose config)."""
    flags = [flag for name in files for flag in ("-f", str(stack.ROOT / name))]
    env = {**os.environ, "PLACEDOCK_REGISTRY": "registry.invalid:5050", "PLACEDOCK_PUBLIC_HOST": "192.0.2.1"}
    done = subprocess.run(
        ["docker", "compose", *flags, "config", "--format", "json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_the_overlay_is_encrypted_unless_asked_not_to():
    """What can be tested here: this kernel has no ESP (placedock testswarm:
    ENCRYPTED_OVERLAY), so the test swarm runs unencrypted."""
    found = {}
    for mode in ("keystone", "noauth"):
        for encrypted in (True, False):
            network = rendered(swarm.stack_files(mode, encrypted))["networks"]["placedock"]
            found[mode, encrypted] = "encrypted" in network.get("driver_opts", {})
    deployed = json.loads(swarm.manager("network", "inspect", f"{swarm.STACK}_placedock"))[0]["Options"]
    print(f"overlay encrypted by (mode, asked): {found}; the test swarm's: {deployed}")
    assert found == {(mode, asked): asked for mode, asked in found}
    assert ("encrypted" in deployed) == testswarm.ENCRYPTED_OVERLAY


MEMCACHE_DUMP = """
import json, socket, urllib.parse
s = socket.create_connection(("memcached", 11211), timeout=5)
def ask(line):
    s.sendall(line.encode() + b"\\r\\n")
    data = b""
    while not data.endswith(b"END\\r\\n"):
        data += s.recv(65536)
    return data.decode(errors="replace")
keys = [urllib.parse.unquote(part[4:]) for line in ask("lru_crawler metadump all").splitlines()
        for part in line.split() if part.startswith("key=")]
print(json.dumps({key: ask("get " + key) for key in keys}))
"""


def test_token_cache_in_memcached_is_signed_not_plain(admin_headers):
    for _ in range(5):
        requests.get(f"{os.environ['PLACEMENT_URL']}/resource_providers", headers=admin_headers, timeout=10)
    node = running()[0][1]
    host = testswarm.socket(int(node.removeprefix("node-")))
    container = stack.docker("-H", host, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={PLACEMENT}")
    dump = json.loads(stack.docker("-H", host, "exec", container.split()[0], "python3", "-c", MEMCACHE_DUMP))
    # keystonemiddleware's entries (keystone's own cache shares the memcached).
    tokens = {key: value for key, value in dump.items() if key.startswith("tokens/")}
    plain = [key for key, value in tokens.items() if '"roles"' in value or '"admin"' in value]
    print(f"memcached: {len(dump)} items, {len(tokens)} of placement's token cache, {len(plain)} of them readable")
    assert tokens, "no token in memcached: placement's token cache is not used"
    assert plain == []


def placement_image(suffix, dockerfile_tail):
    """A placement image built FROM the deployed one, pushed as TAG-suffix; its name as the nodes pull it."""
    source = stack.image("placement")
    name, tag = source.rsplit(":", 1)
    pushed = f"{swarm.registry_address(push=True)}/{name}:{tag}-{suffix}"
    subprocess.run(
        ["docker", "build", "-q", "-t", pushed, "-"],
        input=f"FROM {source}\n{dockerfile_tail}\n",
        text=True,
        check=True,
        capture_output=True,
    )
    stack.docker("push", "-q", pushed)
    return f"{swarm.registry_address()}/{name}:{tag}-{suffix}"


def update_status():
    """(when the service's last update started, its state)."""
    out = swarm.manager(
        "service", "inspect", "--format", "{{with .UpdateStatus}}{{.StartedAt}}|{{.State}}{{end}}", PLACEMENT
    )
    started, _, state = out.partition("|")
    return started, state


def update(image, timeout=240):
    """docker service update --image, then the seconds until this update
    (not an earlier one) ended, and how: completed, or rollback_completed."""
    earlier = update_status()[0]
    started = time.monotonic()
    swarm.manager("service", "update", "--detach", "--with-registry-auth", "--image", image, PLACEMENT)
    ended = ("completed", "rollback_completed", "paused", "rollback_paused")

    def done():
        when, state = update_status()
        return when != earlier and state in ended

    wait_until(done, timeout=timeout, step=0.5, what=f"update to {image}")
    return time.monotonic() - started, update_status()[1]


# What the front door and the replicas said about leaving rotation.
LEAVING = re.compile(r"Server placement/|placedock: SIGTERM|graceful|killed|goodbye to uWSGI|reset by peer|signal")


def timeline(book, before=15.0, after=2.0):
    """For each failed request of `book`, when it failed (UTC) and the lines of
    haproxy's and placement's logs from `before` seconds earlier to `after`
    seconds later that say a replica left rotation, stopped, or was killed."""
    failures = sorted(book.read_failures + book.in_doubt)
    if not failures:
        return []
    since = int(book.started_at + failures[0][0] - before)
    logged, lines = [], []
    for name in ("haproxy", "placement"):
        for node, container, text in testswarm.container_logs(since=since, service=swarm.service(name)):
            for line in text.splitlines():
                stamp, _, rest = line.partition(" ")
                if LEAVING.search(rest):
                    # haproxy says each state change twice, once as a [WARNING].
                    rest = re.sub(r"^\[WARNING\] +\(\d+\) : ", "", rest.strip())[:200]
                    logged.append((stamp[:23], f"{node} {container.rsplit('.', 1)[0]}: {rest}"))
    logged = sorted(set(logged))
    for at, path, what in failures:
        moment = book.started_at + at
        lines.append(f"{utc(moment)[11:]} failed: {path}: {what}")
        low, high = utc(moment - before), utc(moment + after)
        lines.extend(f"  {stamp[11:]} {rest}" for stamp, rest in logged if low <= stamp <= high)
    return lines


def utc(moment):
    """A time.time() as Docker's log timestamps begin: 2026-12-04T13:50:37.123."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}"


def test_at_6_replicas_rollback_update_drain_and_scale_down_converge_under_mixed_load(
    placement_url, admin_headers, restored
):
    """Every node holds 2 replicas: the shape in which a start-first update
    deadlocked, and a drained node's tasks found no place, under
    max_replicas_per_node 2 (moby/moby#40797). Two writers and a reader
    throughout; a broken image is rolled back, a good one rolled out, a node
    drained, and then 6 -> 2."""
    broken = placement_image("broken", 'ENTRYPOINT ["sh", "-c", "echo placedock: broken on purpose >&2; exit 1"]')
    image = placement_image("rollout", 'LABEL org.opencontainers.image.revision="swarm-rollout"')
    providers = vcpu_providers(placement_url, admin_headers, "swarm")
    read_paths = tuple(f"/resource_providers/{rp}/usages" for rp in providers) + READ_PATHS
    sent = {}  # requests sent during each step
    with Traffic(placement_url, admin_headers, read_paths, providers, writers=2, seconds=400) as book:

        def step(name, action):
            before = book.sent
            result = action()
            sent[name] = book.sent - before
            return result

        swarm.manager("service", "scale", "--detach", f"{PLACEMENT}=6")
        to_six = step("scale to 6", lambda: wait_until(lambda: settled(6), timeout=120, step=0.2, what="6 UP"))
        at_six = sorted(running())
        per_node = Counter(node for _, node, _, _ in at_six)
        (rollback, rolled_back) = step("broken image", lambda: update(broken))
        after_rollback = sorted(running())
        took, outcome = step("update", lambda: update(image))
        updated = running()
        victim = next(node for _, node, _, _ in updated if node != DB_NODE)
        drained = time.monotonic() - book.started
        swarm.manager("node", "update", "--availability", "drain", victim)
        moved = step(
            "drain", lambda: wait_until(lambda: settled(6, avoid=victim), timeout=90, step=0.2, what="drained")
        )
        after_drain = Counter(node for _, node, _, _ in running())
        swarm.manager("service", "scale", "--detach", f"{PLACEMENT}=2")
        to_two = step("scale to 2", lambda: wait_until(lambda: settled(2), timeout=60, step=0.2, what="2 UP"))
    window = [round(at - drained, 1) for at, _, _ in book.read_failures + book.in_doubt]
    for line in timeline(book):
        print(f"swarm:   {line}")
    print(
        f"6 replicas in {to_six:.1f}s as {dict(per_node)}; broken image {rolled_back} in {rollback:.1f}s; "
        f"update {outcome} in {took:.1f}s; {victim} drained, 6 UP elsewhere in {moved:.1f}s as {dict(after_drain)}; "
        f"2 left in {to_two:.1f}s; requests sent per step {sent}; {book.summary()} "
        f"(failures at {window} s from the drain)"
    )
    assert max(per_node.values()) == 2, per_node
    # The rollback: the old replicas never stopped, the same tasks on the same image.
    assert rolled_back == "rollback_completed" and after_rollback == at_six
    assert outcome == "completed"
    assert all(task[3] == image for task in updated) and not {t[0] for t in at_six} & {t[0] for t in updated}
    assert victim not in after_drain and sum(after_drain.values()) == 6
    assert all(count > 0 for count in sent.values()), sent
    # Replicas stopped by swarm leave rotation first: no request fails, read or write.
    assert book.read_failures == [], book.read_failures[:5]
    assert (book.in_doubt, book.refused) == ([], {}), (book.in_doubt[:5], book.refused)
    assert book.outcomes["acknowledged"] > 50
    assert book.verify(placement_url, admin_headers) == []
    assert unbalanced(placement_url, admin_headers, providers) == []


def desired():
    return int(swarm.manager("service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", PLACEMENT))


def test_autoscale_scales_the_service_in_when_idle_and_out_under_ab(placement_url, admin_headers, restored, tmp_path):
    """placedock autoscale --swarm, at 10x as tox -e autoscale runs it: the 3
    replicas at rest go down to the HPA's minimum, 1, with `docker service
    scale`; under ab through node-1's front door they come back to 3 or more.
    Every replica's CPU is read from its cgroup, whichever node runs it; a
    reader and two writers throughout, and nothing fails."""
    csv_path = tmp_path / "autoscale.csv"
    scaler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "placedock",
            "autoscale",
            "--swarm",
            "--speed",
            "10",
            "--sync-period",
            "3",
            "--csv",
            csv_path,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    providers = vcpu_providers(placement_url, admin_headers, "swarm-autoscale")
    try:
        with Traffic(placement_url, admin_headers, READ_PATHS, providers, writers=2, seconds=400, pause=1.5) as book:
            # The scale-down window (30 s), then one replica per 6 s.
            shrank = wait_until(lambda: settled(1), timeout=120, step=0.5, what="1 replica")
            load = ab.start(placement_url, admin_headers, 40, concurrency=4)
            started = time.monotonic()
            grew = wait_until(lambda: desired() >= 3, timeout=60, step=0.5, what="3 replicas or more")
            report, _ = load.communicate(timeout=100)
            peak = desired()
            wait_until(lambda: settled(peak), timeout=60, step=0.5, what=f"{peak} UP")
            loaded = time.monotonic() - started
    finally:
        scaler.send_signal(signal.SIGTERM)
        log, _ = scaler.communicate(timeout=60)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    figures = ab.figures(report)
    print("\n".join(line for line in log.splitlines() if "scaled" in line or "cannot" in line))
    print(
        f"swarm autoscale: 3 -> 1 in {shrank:.1f}s at rest, >= 3 {grew:.1f}s after ab began, {peak} when it ended "
        f"({loaded:.0f}s); ab {figures}; {book.summary()}"
    )
    assert scaler.returncode == 0, log[-2000:]
    # Every replica, on any node, had a CPU sample: the cgroups of all three hosts were read.
    assert any(int(r["sampled"]) >= 3 for r in rows), rows[-5:]
    assert figures["Complete requests"] > 500 and figures["Failed requests"] == 0, report
    assert figures["Non-2xx responses"] == 0, report
    assert book.read_failures == [], book.read_failures[:5]
    assert (book.in_doubt, book.refused) == ([], {}), (book.in_doubt[:5], book.refused)
    assert book.verify(placement_url, admin_headers) == []
    assert unbalanced(placement_url, admin_headers, providers) == []


def environments():
    """{service: its containers' environment, as the service defines it}."""
    names = swarm.manager("stack", "services", swarm.STACK, "--format", "{{.Name}}").split()
    return {
        name: swarm.manager("service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}", name)
        for name in names
    }


def leaks():
    """{service: the variable} of every service whose environment holds a secret's value."""
    return {svc: var for svc, env in environments().items() for var, value in made().items() if value in env}


def test_no_credential_is_in_an_environment():
    given = sorted(svc for svc, env in environments().items() if "_FILE=/run/secrets/" in env)
    print(f"keystone mode: secrets given as files to {given}")
    assert leaks() == {}
    holders = ("mariadb", "placement", "keystone", "keystone-init", "keystone-register", "haproxy")
    assert {swarm.service(name) for name in holders} <= set(given)


def from_node(n, url):
    """The status of a GET of URL sent from test node N's own address."""
    probe = (
        "import urllib.request, urllib.error\n"
        f"try:\n    print(urllib.request.urlopen({url!r}, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)"
    )
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{testswarm.NETNS}{n}", sys.executable, "-c", probe],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stdout)


def etcd_keys(*args):
    """placedock-etcd in a running placement task (docs/etcd.md), on its node's engine."""
    for task_id, node, _, _ in running():
        n = int(node.rpartition("-")[2])
        container = testswarm.node_docker(n, "ps", "-q", "--filter", f"label=com.docker.swarm.task.id={task_id}")
        if container:
            return testswarm.node_docker(n, "exec", container, "placedock-etcd", *args)
    raise AssertionError("no placement task is running")


def test_options_from_etcd_roll_across_the_hosts_one_replica_at_a_time(placement_url, admin_headers):
    """deploy --etcd: an etcd member on each node; a change reaches every
    replica, on 3 hosts, one after another (the etcd lock's history)."""
    took = swarm.deploy("keystone", replicas=REPLICAS, timeout=300, encrypted=testswarm.ENCRYPTED_OVERLAY, etcd=True)
    wait_until(lambda: settled(REPLICAS), timeout=90, step=0.5, what="3 replicas UP")
    members = {node for name in ("etcd-1", "etcd-2", "etcd-3") for _, node, _, _ in running(swarm.service(name))}

    def current(revision):
        rows = json.loads(etcd_keys("status", "--json"))["replicas"]
        return len(rows) == REPLICAS and all(r["revision"] == revision and r["state"] == "serving" for r in rows)

    wait_until(lambda: current(json.loads(etcd_keys("status", "--json"))["latest"]), timeout=60, step=0.5)
    providers = vcpu_providers(placement_url, admin_headers, "swarm-etcd")
    with Traffic(placement_url, admin_headers, READ_PATHS, providers, writers=2, pause=0.05) as book:
        time.sleep(1)
        revision = int(
            re.match(r"revision (\d+):", etcd_keys("set", "placement.max_allocation_candidates=2000")).group(1)
        )
        rolled = wait_until(
            lambda: current(revision), timeout=120, step=0.5, what=f"every replica on revision {revision}"
        )
    history = sorted(
        (row["acquired"], row.get("released"), row["replica"], row["host"])
        for row in json.loads(etcd_keys("history", "--json"))
        if row["acquired"] >= revision
    )
    print(
        f"etcd on the swarm: deployed in {took:.1f}s, members on {sorted(members)}; a change on every replica in "
        f"{rolled:.1f}s, lock held by {[(host, acquired, released) for acquired, released, _, host in history]}; "
        f"{book.summary()}"
    )
    assert members == set(NODES), members
    # Every replica took its turn, on the hosts they run on: 3 on a fresh deploy
    # (seen here); the tests before this one may leave two on one node, and
    # swarm does not move running tasks to spread them again.
    hosts = {node for _, node, _, _ in running()}
    assert len(history) == REPLICAS and {host for *_, host in history} == hosts and len(hosts) >= 2, history
    for (_, released, _, _), (acquired, _, _, _) in zip(history, history[1:], strict=False):
        assert released is not None and acquired >= released, history
    assert history[-1][1] is not None, history
    assert book.read_failures == [], book.read_failures[:5]
    assert (book.in_doubt, dict(book.refused)) == ([], {}), (book.in_doubt[:5], book.refused)
    assert book.verify(placement_url, admin_headers) == []
    assert unbalanced(placement_url, admin_headers, providers) == []


def test_noauth_only_on_the_flag_and_only_to_the_addresses_it_names():
    """Last: it replaces the keystone stack with a noauth one."""
    host = testswarm.HOST_ADDRESS  # this machine, on the test hosts' bridge
    took = swarm.deploy(
        "noauth", replicas=REPLICAS, timeout=240, clients=[f"{host}/32"], encrypted=testswarm.ENCRYPTED_OVERLAY
    )
    url = f"{os.environ['PLACEMENT_URL']}/resource_providers"
    ours = requests.get(url, headers={"x-auth-token": "admin"}, timeout=10)
    theirs = from_node(2, url)
    body = requests.get(url, headers={"x-auth-token": "admin"}, timeout=10).json()
    print(
        f"noauth, served to {host}/32 only: deployed in {took:.1f}s; "
        f"from {host} {ours.status_code}, from node-2 {theirs}"
    )
    assert ours.status_code == 200 and "resource_providers" in body
    assert theirs == 403
    assert leaks() == {}
