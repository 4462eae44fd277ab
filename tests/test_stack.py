"""The stack itself: haproxy spreads requests over every replica, all replicas
share one database, and scaling needs no haproxy restart and fails no request."""

import time
from collections import Counter

import pytest
import requests
from placedock.stack import compose as stack
from placedock.traffic.ledger import Traffic, unbalanced, vcpu_providers

REPLICAS = 3
SERVER_HEADER = "X-Placedock-Server"


def answered_by(placement_url, path="/", headers=None, count=30):
    servers = Counter()
    for _ in range(count):
        resp = requests.get(placement_url + path, headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        servers[resp.headers[SERVER_HEADER]] += 1
    return servers


def test_haproxy_reports_every_replica_up():
    assert len(stack.up_servers()) == REPLICAS


def test_requests_spread_over_every_replica(placement_url):
    servers = answered_by(placement_url)
    assert len(servers) == REPLICAS, servers
    # Round robin: no replica gets more than half of 30 requests.
    assert max(servers.values()) <= 15, servers


def test_write_through_one_replica_reads_back_through_every_replica(placement_url, admin_headers, provider):
    path = f"/resource_providers/{provider['uuid']}"
    body = {"resource_provider_generation": provider["generation"], "inventories": {"VCPU": {"total": 8}}}
    resp = requests.put(placement_url + path + "/inventories", json=body, headers=admin_headers, timeout=10)
    assert resp.status_code == 200, resp.text
    written, writer = resp.json()["resource_provider_generation"], resp.headers[SERVER_HEADER]
    assert written == provider["generation"] + 1
    seen = {}
    for _ in range(3 * REPLICAS):
        resp = requests.get(placement_url + path, headers=admin_headers, timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json()["name"] == provider["name"]
        seen.setdefault(resp.headers[SERVER_HEADER], set()).add(resp.json()["generation"])
    assert len(seen) == REPLICAS, seen
    # Every replica, the writer's included, reads the generation the write gave.
    assert seen == dict.fromkeys(seen, {written}), f"written {written} through {writer}; read {seen}"


@pytest.fixture
def haproxy_container(compose_stack):
    (container,) = compose_stack.container_ids("haproxy")
    return container


def test_scale_down_and_up_without_haproxy_restart_or_failed_request(
    placement_url, admin_headers, compose_stack, haproxy_container
):
    before = stack.started_at(haproxy_container)
    providers = vcpu_providers(placement_url, admin_headers, "test-stack-scale")
    paths = ("/", "/resource_providers", "/traits?name=startswith:HW_CPU")
    with Traffic(placement_url, admin_headers, paths, providers, writers=2) as book:
        done = book.sent
        compose_stack.scale(1)
        stack.wait_for_up(1, timeout=30)
        during_down, done = book.sent - done, book.sent
        assert len(compose_stack.container_ids("placement")) == 1
        compose_stack.scale(REPLICAS)
        stack.wait_for_up(REPLICAS, timeout=60)
        during_up = book.sent - done
        time.sleep(1)
    print(f"\nscale {REPLICAS}->1->{REPLICAS}: {book.summary()}")
    # The traffic really ran across both changes.
    assert during_down >= 4 and during_up >= 4, (during_down, during_up)
    # No request failed, read or write, and every write is where it was acknowledged.
    assert book.read_failures == [], book.read_failures[:5]
    assert (book.in_doubt, book.refused) == ([], {}), (book.in_doubt[:5], book.refused)
    assert book.outcomes["acknowledged"] >= 4
    assert book.verify(placement_url, admin_headers) == []
    assert unbalanced(placement_url, admin_headers, providers) == []
    assert stack.started_at(haproxy_container) == before
    assert len(answered_by(placement_url)) == REPLICAS


# The server: the process the entrypoint's shell (PID 1, see placement/entrypoint.sh) started.
SERVER_PID = (
    "import os; print(*[p for p in os.listdir('/proc')"
    " if p.isdigit() and open(f'/proc/{p}/stat').read().split()[3] == '1'])"
)


def test_without_placement_src_every_replica_runs_the_pinned_release(compose_stack):
    release = stack.placement_release()
    for container in compose_stack.container_ids("placement"):
        (server,) = stack.docker("exec", container, "python3", "-c", SERVER_PID).split()
        # What the server process was started with: no tree, no path ahead of the venv.
        environ = stack.docker("exec", container, "cat", f"/proc/{server}/environ").split("\0")
        assert not [v for v in environ if v.startswith(("PLACEMENT_SRC=", "PYTHONPATH="))], environ
        assert stack.docker("exec", container, "cat", f"/proc/{server}/cmdline").split("\0")[0] == "uwsgi"
        where = stack.docker(
            "exec", container, "python3", "-c",
            "import importlib.metadata as md, placement; print(placement.__file__, md.version('openstack-placement'))",
        )  # fmt: skip
        assert where == f"/opt/venv/lib/python3.11/site-packages/placement/__init__.py {release}"
        image = stack.docker("inspect", "-f", "{{.Config.Image}}", container)
        assert image == stack.image("placement", release)


def test_database_down_gives_503_with_retry_after_then_200_without_replica_restart(
    placement_url, admin_headers, compose_stack
):
    """Placement's database service stopped: the single mariadb, on the Galera
    stack the database front door, or PostgreSQL. Every replica answers at
    once, with placement's JSON error and a Retry-After, and serves again once
    the database is back."""
    replicas = compose_stack.container_ids("placement")
    before = {c: stack.started_at(c) for c in replicas}
    path = "/resource_providers?name=outage-none"
    database = compose_stack.database_service
    compose_stack.compose("stop", database)
    answers = []
    try:
        for _ in range(3 * REPLICAS):
            started = time.monotonic()
            resp = requests.get(placement_url + path, headers=admin_headers, timeout=30)
            answers.append((time.monotonic() - started, resp))
    finally:
        compose_stack.compose("start", database)
    slowest = max(seconds for seconds, _ in answers)
    by = Counter(resp.headers.get(SERVER_HEADER) for _, resp in answers)
    print(f"database down: {len(answers)} requests, slowest answer {slowest:.2f}s, from {dict(by)}")
    for _, resp in answers:
        assert resp.status_code == 503, resp.text
        assert int(resp.headers["Retry-After"]) > 0
        (error,) = resp.json()["errors"]
        assert error["status"] == 503 and error["title"] == "Service Unavailable", error
        assert "database" in error["detail"], error
    assert len(by) == REPLICAS, by
    assert slowest < 1

    back = stack.wait_until(
        lambda: requests.get(placement_url + path, headers=admin_headers, timeout=30).status_code == 200,
        timeout=60,
        step=0.2,
        what="placement answering 200 again",
    )
    print(f"database back: placement answered 200 {back:.1f}s after `start {database}`")
    assert len(answered_by(placement_url, path, admin_headers)) == REPLICAS
    assert {c: stack.started_at(c) for c in replicas} == before
