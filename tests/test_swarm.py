"""placedock on a Docker Swarm of three test hosts (tools/testswarm.py run
--deploy: swarm/stack.yaml deployed, 3 placement replicas). The front door is
node-1's haproxy; node-1 also holds the database. Each test changes the
swarm while readers and writers go through that front door, and prints what
it measured.

    tox -e swarm       (runs tests/test_gabbits.py first, through the same front door)
"""

import os
import subprocess
import time
import uuid
from collections import Counter

import pytest
import requests
import stack
from load import Load, Writer, check_books, vcpu_providers
from stack import wait_until

import swarm

REPLICAS = 3
PLACEMENT = swarm.service("placement")
STATS_URL = os.environ.get("HAPROXY_STATS_URL")
NODES = dict(item.split("=") for item in os.environ.get("PLACEDOCK_SWARM_NODES", "").split())
DB_NODE = "node-1"  # labelled placedock.database=true by tools/testswarm.py
READ_PATHS = ("/", "/resource_providers?name=swarm-none", "/traits?name=startswith:HW_CPU", "/resource_classes")

if not os.environ.get("PLACEDOCK_SWARM_HOST"):
    raise RuntimeError("PLACEDOCK_SWARM_HOST is not set: run these with tox -e swarm (tools/testswarm.py run)")


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
        return len(stack.up_servers(STATS_URL))
    except OSError:
        return -1


def settled(replicas, avoid=None):
    """`replicas` tasks running (none on node `avoid`), all UP in the front door."""
    now = running()
    return len(now) == replicas and all(node != avoid for _, node, _, _ in now) and up_count() == replicas


@pytest.fixture
def restored():
    """Whatever a test changes, the swarm is back to 3 replicas on 3 active nodes afterwards."""
    yield
    for node in NODES:
        swarm.manager("node", "update", "--availability", "active", node)
    swarm.manager("service", "scale", "--detach", f"{PLACEMENT}={REPLICAS}")
    wait_until(lambda: settled(REPLICAS), timeout=90, step=0.5, what="3 replicas back")


def test_replicas_spread_over_nodes_and_every_node_is_a_front_door():
    placed = running()
    nodes = Counter(node for _, node, _, _ in placed)
    print(f"deploy: placement tasks per node {dict(nodes)}; front door on node-1 has {up_count()} UP")
    assert len(placed) == REPLICAS
    assert len(nodes) >= 2, nodes
    assert up_count() == REPLICAS
    for name, address in NODES.items():
        resp = requests.get(f"http://{address}:8778/", timeout=5)
        assert resp.status_code == 200, (name, resp.status_code)
        assert resp.json()["versions"][0]["max_version"].startswith("1.")
    # Only the database's node holds the database.
    assert [node for _, node, _, _ in running(swarm.service("mariadb"))] == [DB_NODE]
    assert leaks() == {}


@pytest.fixture
def providers(placement_url, admin_headers):
    return vcpu_providers(placement_url, admin_headers, "swarm")


def test_drain_node_under_mixed_load_loses_nothing(placement_url, admin_headers, providers, restored):
    victim = next(node for _, node, _, _ in running() if node != DB_NODE)
    project = str(uuid.uuid4())
    writers = [Writer(placement_url, admin_headers, providers, seconds=25, project=project) for _ in range(2)]
    read_paths = tuple(f"/resource_providers/{rp}/usages" for rp in providers) + READ_PATHS
    with Load(placement_url, admin_headers, read_paths, limit_seconds=60) as reads:
        for writer in writers:
            writer.start()
        time.sleep(5)
        drained = time.monotonic()
        swarm.manager("node", "update", "--availability", "drain", victim)
        rescheduled = wait_until(lambda: settled(REPLICAS, avoid=victim), timeout=60, step=0.2, what="rescheduled")
        for writer in writers:
            writer.join()
    window = [round(at - drained, 1) for at, _, _ in reads.failures]
    statuses = sum((w.statuses for w in writers), Counter())
    print(
        f"drain {victim}: its replica ran elsewhere and all {REPLICAS} were UP {rescheduled:.1f}s after the drain; "
        f"{reads.sent} GETs, {len(reads.failures)} failed (at {window} s); writes by status {dict(statuses)}, "
        f"{sum(len(w.written) for w in writers)} acknowledged"
    )
    assert reads.failures == [], reads.failures[:5]
    assert [bad for w in writers for bad in w.bad] == []
    assert sum(len(w.written) for w in writers) > 50
    check_books(placement_url, admin_headers, providers, writers)


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


def update(image):
    """docker service update --image, then the seconds until the update
    ended, and how: completed, or rollback_completed."""
    started = time.monotonic()
    swarm.manager("service", "update", "--detach", "--image", image, PLACEMENT)
    ended = ("completed", "rollback_completed", "paused", "rollback_paused")
    wait_until(lambda: swarm.update_state(PLACEMENT) in ended, timeout=180, step=0.5, what=f"update to {image}")
    return time.monotonic() - started, swarm.update_state(PLACEMENT)


def test_rolling_update_under_load_fails_no_get(placement_url, admin_headers):
    image = placement_image("rollout", 'LABEL org.opencontainers.image.revision="swarm-rollout"')
    before = {task_id for task_id, _, _, _ in running()}
    with Load(placement_url, admin_headers, READ_PATHS, limit_seconds=200) as load:
        took, outcome = update(image)
        time.sleep(2)
    now = running()
    print(f"rolling update to {image}: {outcome} in {took:.1f}s; {load.sent} GETs, {len(load.failures)} failed")
    assert outcome == "completed"
    assert len(now) == REPLICAS and all(task[3] == image for task in now), now
    assert not before & {task_id for task_id, _, _, _ in now}
    assert up_count() == REPLICAS
    assert load.failures == [], load.failures[:5]


def test_broken_image_is_rolled_back_while_the_old_replicas_serve(placement_url, admin_headers):
    broken = placement_image("broken", 'ENTRYPOINT ["sh", "-c", "echo placedock: broken on purpose >&2; exit 1"]')
    before = sorted(running())
    with Load(placement_url, admin_headers, READ_PATHS, limit_seconds=200) as load:
        took, outcome = update(broken)
        time.sleep(2)
    after = sorted(running())
    history = swarm.manager("service", "ps", PLACEMENT, "--format", "{{.Image}} {{.Error}}").splitlines()
    print(
        f"broken image {broken}: {outcome} in {took:.1f}s; {load.sent} GETs, {len(load.failures)} failed; "
        f"tasks running before and after the same: {before == after}"
    )
    assert outcome == "rollback_completed"
    assert any(line.startswith(broken) for line in history), history
    # The old replicas never stopped: the same tasks, on the same image.
    assert after == before
    assert up_count() == REPLICAS
    assert load.failures == [], load.failures[:5]


def test_scale_3_to_6_to_2_under_load_fails_no_get(placement_url, admin_headers, restored):
    with Load(placement_url, admin_headers, READ_PATHS, limit_seconds=200) as load:
        swarm.manager("service", "scale", "--detach", f"{PLACEMENT}=6")
        to_six = wait_until(lambda: settled(6), timeout=120, step=0.2, what="6 replicas UP")
        during_up, before = load.sent, load.sent
        swarm.manager("service", "scale", "--detach", f"{PLACEMENT}=2")
        to_two = wait_until(lambda: settled(2), timeout=60, step=0.2, what="2 replicas UP")
        during_down = load.sent - before
        time.sleep(2)  # and keep serving on the two that are left
    nodes = Counter(node for _, node, _, _ in running())
    print(
        f"scale: 3->6 in {to_six:.1f}s, 6->2 in {to_two:.1f}s (running and UP in the front door; the 2 left on "
        f"{dict(nodes)}); {load.sent} GETs ({during_up} while scaling up, {during_down} while scaling down), "
        f"{len(load.failures)} failed"
    )
    assert during_up >= 2 and during_down >= 2, (during_up, during_down)
    assert load.failures == [], load.failures[:5]


def credentials():
    """Every password and database URL that tools/swarm.py makes a secret of, as env/ holds them."""
    return {name: stack.env_file(env_file)[var] for name, (env_file, var) in swarm.SECRETS.items()}


def environments():
    """{service: its containers' environment, as the service defines it}."""
    names = swarm.manager("stack", "services", swarm.STACK, "--format", "{{.Name}}").split()
    return {
        name: swarm.manager("service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}", name)
        for name in names
    }


def leaks():
    """{service: the secret} of every service whose environment holds a credential's value."""
    return {svc: name for svc, env in environments().items() for name, value in credentials().items() if value in env}


def test_keystone_mode_validates_real_tokens_and_no_credential_is_in_an_environment(placement_url):
    took = swarm.deploy("keystone", replicas=REPLICAS, timeout=240)
    token = stack.admin_token()
    for name, address in NODES.items():
        url = f"http://{address}:8778/resource_providers"
        assert requests.get(url, headers={"x-auth-token": token}, timeout=10).status_code == 200, name
        # noauth2's admin token means nothing to keystone.
        assert requests.get(url, headers={"x-auth-token": "admin"}, timeout=10).status_code == 401, name
    given = sorted(svc for svc, env in environments().items() if "_FILE=/run/secrets/" in env)
    print(f"keystone mode: deployed over the noauth stack in {took:.1f}s; secrets given as files to {given}")
    assert leaks() == {}
    holders = ("mariadb", "placement", "keystone", "keystone-init", "keystone-register")
    assert {swarm.service(name) for name in holders} <= set(given)
