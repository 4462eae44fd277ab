"""Whole-stack lifecycle faults: concurrent cold starts, data across down/up,
and a front-door port that is already taken. Each test owns the compose
project placedock-faults and removes it, volumes included."""

import json
import re
import socket
import time
import uuid

import pytest
import requests
from placedock.stack import compose as stack

PROJECT = "placedock-faults"
ADMIN = {"x-auth-token": "admin", "openstack-api-version": "placement 1.39"}
# Log lines that would mean replicas raced on the schema or crashed.
BAD_LOG_LINES = re.compile(r"Traceback|Duplicate entry|DBDuplicateEntry|OperationalError|CRITICAL| ERROR ")


@pytest.fixture
def fresh():
    project = stack.Stack("noauth", project=PROJECT)
    project.down()
    yield project
    project.down()


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_cold_start_of_five_replicas_on_an_empty_database(fresh, attempt):
    started = time.monotonic()
    fresh.up(5, build=False)
    stack.wait_for_up(5, timeout=90)
    print(f"cold start {attempt}: up --scale placement=5 -> 5 UP in haproxy: {time.monotonic() - started:.1f}s")
    replicas = fresh.container_ids("placement")
    assert len(replicas) == 5
    for container in replicas:
        assert stack.docker("inspect", "-f", "{{.RestartCount}}", container) == "0"
        assert stack.container_health(container) == "healthy"
    (migration,) = fresh.container_ids("placement-db-sync", all_states=True)
    assert stack.docker("inspect", "-f", "{{.State.ExitCode}}", migration) == "0"
    logs = fresh.logs("placement", "placement-db-sync")
    assert not BAD_LOG_LINES.findall(logs), [line for line in logs.splitlines() if BAD_LOG_LINES.search(line)][:5]


def test_providers_inventories_and_allocations_survive_down_and_up(fresh):
    url = stack.placement_url()
    fresh.up(1, build=False)
    stack.wait_for_up(1)
    run = uuid.uuid4().hex[:12]
    rp = requests.post(f"{url}/resource_providers", json={"name": f"durable-{run}"}, headers=ADMIN, timeout=10).json()
    inventory = {"resource_provider_generation": rp["generation"], "inventories": {"VCPU": {"total": 8}}}
    put = requests.put(f"{url}/resource_providers/{rp['uuid']}/inventories", json=inventory, headers=ADMIN, timeout=10)
    assert put.status_code == 200, put.text
    consumer = str(uuid.uuid4())
    allocation = {
        "allocations": {rp["uuid"]: {"resources": {"VCPU": 3}}},
        "project_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "consumer_generation": None,
        "consumer_type": "INSTANCE",
    }
    put = requests.put(f"{url}/allocations/{consumer}", json=allocation, headers=ADMIN, timeout=10)
    assert put.status_code == 204, put.text

    fresh.compose("down")  # no -v: the database volume stays
    assert fresh.container_ids("mariadb", all_states=True) == []
    fresh.up(1, build=False)
    stack.wait_for_up(1)

    got = requests.get(f"{url}/resource_providers/{rp['uuid']}", headers=ADMIN, timeout=10)
    assert got.json()["name"] == f"durable-{run}"
    inv = requests.get(f"{url}/resource_providers/{rp['uuid']}/inventories", headers=ADMIN, timeout=10).json()
    assert inv["inventories"]["VCPU"]["total"] == 8
    alloc = requests.get(f"{url}/allocations/{consumer}", headers=ADMIN, timeout=10).json()
    assert alloc["allocations"][rp["uuid"]]["resources"] == {"VCPU": 3}
    usages = requests.get(f"{url}/resource_providers/{rp['uuid']}/usages", headers=ADMIN, timeout=10).json()
    assert usages["usages"] == {"VCPU": 3}, json.dumps(usages)


def test_front_door_port_in_use_fails_clearly(fresh):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project = stack.Stack("noauth", project=PROJECT, PLACEMENT_PORT=str(port))
        started = time.monotonic()
        done = project.compose("up", "-d", "--scale", "placement=1", check=False, capture=True)
        seconds = time.monotonic() - started
    print(f"port {port} in use: compose up failed after {seconds:.1f}s")
    assert done.returncode != 0
    assert re.search(rf"127\.0\.0\.1:{port}.*(port is already allocated|address already in use)", done.stderr), (
        done.stderr[-2000:]
    )
