"""The front door under stress: what haproxy sends again and what it never does,
the replicas' keep-alive connections, and the README's own rescale.

The first tests build a front door of their own beside the stack (its haproxy
image and its placement image, on the stack's network and database, with a
short PLACEMENT_TIMEOUT and, where said, a short uwsgi harakiri), so that
timeouts take seconds and the stack's own front door is left as it is. A
request is made slow by a table lock held in mariadb while it runs."""

import socket
import subprocess
import threading
import time
import uuid
from collections import Counter

import pytest
import requests
from placedock.stack import compose as stack
from placedock.stack.compose import wait_until
from placedock.traffic.ledger import Traffic, unbalanced, vcpu_providers


class FrontDoor:
    """haproxy and `replicas` placement replicas of the stack's images, with
    the stack's placement environment; the replicas answer to one DNS alias
    of their own, which is all this haproxy sends to."""

    def __init__(self, compose_stack, replicas, timeout, harakiri=None):
        self.compose_stack = compose_stack
        self.name = f"frontdoor-{uuid.uuid4().hex[:8]}"
        self.network = f"{compose_stack.project}_default"
        self.containers = []
        template = compose_stack.container_ids("placement")[0]
        env = {k: v for k, v in stack.container_env(template).items() if k != "HOSTNAME"}
        command = ["uwsgi", "--ini", "/etc/placement/uwsgi.ini"]
        if harakiri is not None:
            # After --ini: an option given there wins over the environment.
            command += ["--harakiri", str(harakiri)]
            # uwsgi keeps one harakiri clock per process, which every request
            # of its threads sets and clears (placement/uwsgi.ini): one thread
            # per process, so that it strikes when this request overstays.
            env["UWSGI_THREADS"] = "1"
        self.replicas = [
            self.run("--network-alias", self.name, *[f"-e{k}={v}" for k, v in env.items()], stack.image("placement"),
                     *command)
            for _ in range(replicas)
        ]  # fmt: skip
        self.haproxy = self.run(
            f"-ePLACEMENT_SERVERS={self.name}:8778",
            f"-ePLACEMENT_TIMEOUT={timeout}",
            "-p127.0.0.1::8778",
            "-p127.0.0.1::8404",
            stack.image("haproxy"),
        )
        self.url = "http://" + stack.docker("port", self.haproxy, "8778/tcp").splitlines()[0]
        self.stats_url = "http://" + stack.docker("port", self.haproxy, "8404/tcp").splitlines()[0]
        stack.wait_for_up(replicas, timeout=120, url=self.stats_url)

    def run(self, *args):
        container = stack.docker(
            "run", "-d", "--network", self.network,
            # compose's labels: `down --remove-orphans` removes it if this test could not.
            "--label", f"com.docker.compose.project={self.compose_stack.project}",
            "--label", f"com.docker.compose.service={self.name}",
            *args,
        )  # fmt: skip
        self.containers.append(container)
        return container

    def retries(self):
        return stack.haproxy_retries(url=self.stats_url)

    def harakiri_by_replica(self):
        """{replica: how many of its workers harakiri killed}."""
        return {c: stack.container_logs(c).count("HARAKIRI ON WORKER") for c in self.replicas}

    def remove(self):
        for container in self.containers:
            stack.remove(container)


@pytest.fixture
def front_door(compose_stack):
    made = []

    def make(replicas=2, timeout="2s", harakiri=None):
        made.append(FrontDoor(compose_stack, replicas, timeout, harakiri))
        return made[-1]

    yield make
    for door in made:
        door.remove()


@pytest.fixture
def table_lock(compose_stack):
    """lock(table, seconds): `table` of the placement database write-locked
    for that long, from now; a request that needs it waits. Back when the
    fixture ends at the latest."""
    (mariadb,) = compose_stack.container_ids("mariadb")
    holders = []

    def sleeping():
        return "User sleep" in stack.docker("exec", "-u", "root", mariadb, "mariadb", "-N", "-e", "SHOW PROCESSLIST")

    def lock(table, seconds):
        sql = f"LOCK TABLES {table} WRITE; DO SLEEP({seconds}); UNLOCK TABLES;"
        holders.append(subprocess.Popen(["docker", "exec", "-u", "root", mariadb, "mariadb", "placement", "-e", sql]))
        wait_until(sleeping, timeout=10, what=f"the lock on {table}")
        return holders[-1]

    yield lock
    for holder in holders:
        assert holder.wait(timeout=60) == 0


def gateway_timeout(resp):
    assert resp.status_code == 504, resp.text
    assert resp.headers["content-type"] == "application/json"
    (error,) = resp.json()["errors"]
    assert error["code"] == "placedock.gateway_timeout", error


def test_a_request_that_outlives_harakiri_costs_one_worker_on_one_replica(front_door, table_lock, admin_headers):
    """A GET held up past the replica's harakiri: the client gets one JSON 504
    when the front door's timeout strikes, and it is sent to no other replica,
    so harakiri kills one worker on one replica, not one on each."""
    door = front_door(replicas=2, timeout="2s", harakiri=4)
    holder = table_lock("resource_providers", 6)
    started = time.monotonic()
    resp = requests.get(f"{door.url}/resource_providers?name=held-up", headers=admin_headers, timeout=30)
    answered = time.monotonic() - started
    holder.wait(timeout=30)  # nothing waits on the lock any more: every harakiri has struck
    killed = wait_until(lambda: sum(door.harakiri_by_replica().values()) >= 1, timeout=15, what="a harakiri")
    by_replica = door.harakiri_by_replica()
    print(
        f"harakiri: answered {resp.status_code} in {answered:.1f}s; workers killed by replica "
        f"{sorted(by_replica.values())} ({killed:.1f}s after the lock ended); haproxy retries {door.retries()}"
    )
    gateway_timeout(resp)
    assert answered < 2 + 1.5
    assert sorted(by_replica.values()) == [0, 1], by_replica
    assert door.retries() == 0
    # The killed worker is back: both replicas serve.
    for _ in range(4):
        assert requests.get(f"{door.url}/resource_providers", headers=admin_headers, timeout=10).status_code == 200


def test_a_put_whose_answer_is_lost_is_applied_once(front_door, table_lock, provider, placement_url, admin_headers):
    """A PUT that reached a replica and got no answer in time is not sent
    again: the client gets a 504 (the outcome in doubt) instead of a 409 from
    a second try that found its own write committed, and the write is there
    once."""
    door = front_door(replicas=2, timeout="2s")
    path = f"/resource_providers/{provider['uuid']}/inventories"
    generation = provider["generation"]
    body = {"resource_provider_generation": generation, "inventories": {"VCPU": {"total": 8}}}
    holder = table_lock("inventories", 4)
    resp = requests.put(door.url + path, json=body, headers=admin_headers, timeout=30)
    holder.wait(timeout=30)

    def committed():
        got = requests.get(placement_url + path, headers=admin_headers, timeout=10).json()
        return got if got["resource_provider_generation"] != generation else None

    wait_until(committed, timeout=15, what="the write committing")
    got = committed()
    after = got["resource_provider_generation"]
    print(f"lost answer: PUT answered {resp.status_code}; provider generation {generation} -> {after}")
    gateway_timeout(resp)
    assert got["resource_provider_generation"] == generation + 1
    assert got["inventories"]["VCPU"]["total"] == 8
    assert door.retries() == 0


# Idle gaps before each POST: 0.5 s to 3 s in steps of 0.25 s, each step also
# 20 ms either side in steps of 5 ms: a replica that closes idle connections
# after some whole number of seconds is met at that moment, give or take the
# request's own time.
GAPS = [0.5 + 0.25 * step + 0.005 * offset for offset in range(-4, 5) for step in range(11)]


def idle_connections(door):
    """haproxy's idle connections to the door's replicas, kept for reuse."""
    return sum(int(row["srv_icur"] or 0) for row in stack.haproxy_stats(url=door.stats_url))


def seconds_until_closed_by_peer(address, limit):
    """Send one keep-alive request on a new connection to `address`, read the
    answer, then wait: the seconds until the peer closed the idle connection,
    or None if it still had not after `limit`."""
    with socket.create_connection(address, timeout=limit + 5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: placement\r\nConnection: keep-alive\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        idle_since = time.monotonic()
        conn.settimeout(limit)
        try:
            closed = conn.recv(1) == b""
        except TimeoutError:
            return None
        assert closed
        return time.monotonic() - idle_since


def test_a_replica_never_closes_an_idle_connection_before_haproxy_does(front_door, admin_headers):
    """haproxy reuses idle connections to a replica, and closes those it no
    longer needs on its side. Were the replica to close one first, a request
    sent on it at that moment would find it closed, and a POST could not be
    sent again. So: after a burst, haproxy has closed every idle connection
    within a few seconds; a replica keeps an idle one open far longer."""
    door = front_door(replicas=1, timeout="10s")
    burst = [
        threading.Thread(
            target=requests.get, args=(f"{door.url}/resource_providers",), kwargs={"headers": admin_headers}
        )
        for _ in range(9)
    ]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join()
    assert idle_connections(door) > 0
    haproxy_closed = wait_until(lambda: idle_connections(door) == 0, timeout=30, step=0.1)
    limit = max(10.0, 3 * haproxy_closed)
    (replica,) = door.replicas
    replica_closed = seconds_until_closed_by_peer((stack.container_ip(replica), 8778), limit)
    print(
        f"idle connections: haproxy closed its last {haproxy_closed:.1f}s after the burst; the replica closed "
        + (f"one after {replica_closed:.1f}s" if replica_closed is not None else f"none within {limit:.0f}s")
    )
    assert replica_closed is None


def test_posts_after_idle_gaps_all_succeed(front_door, admin_headers):
    """A replica never closes an idle connection that haproxy may still send
    on: 200 POSTs, each after the front door sat idle for 0.5 to 3 s, all
    answered 200. Four front doors of one replica each (one replica, so every
    POST goes where the last one went), 50 POSTs each, side by side."""
    doors = [front_door(replicas=1, timeout="10s") for _ in range(4)]
    outcomes = Counter()
    failures = []

    def post_after_gaps(door, first):
        for index in range(first, first + 50):
            gap = GAPS[index % len(GAPS)]
            time.sleep(gap)
            name = f"idle-{uuid.uuid4().hex[:12]}"
            try:
                resp = requests.post(f"{door.url}/resource_providers", json={"name": name}, headers=admin_headers,
                                     timeout=10)  # fmt: skip
                outcomes[resp.status_code] += 1
                if resp.status_code != 200:
                    failures.append((gap, resp.status_code, resp.text[:120]))
            except requests.RequestException as exc:
                outcomes["no answer"] += 1
                failures.append((gap, repr(exc)))

    threads = [threading.Thread(target=post_after_gaps, args=(door, 50 * n)) for n, door in enumerate(doors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"idle gaps: {sum(outcomes.values())} POSTs, {dict(outcomes)}; failed after gaps {failures[:5]}")
    assert failures == []
    assert outcomes == {200: 200}


def test_the_readme_rescale_under_mixed_load_fails_nothing(compose_stack, placement_url, admin_headers):
    """Exactly the README's rescale, `up -d --wait --scale placement=5`, then
    a plain `up -d --wait`, which comes back to the default of 3 replicas; both
    re-run the one-shot services. Under GETs and allocation writes: no GET
    fails, every write is answered 2xx, and every acknowledged one is there."""
    providers = vcpu_providers(placement_url, admin_headers, "rescale")
    read_paths = ("/", *(f"/resource_providers/{rp}/usages" for rp in providers))
    timings = {}
    with Traffic(placement_url, admin_headers, read_paths, providers, writers=2, seconds=300) as book:
        for step, args in (("to 5", ["--scale", "placement=5"]), ("back to the default", [])):
            started = time.monotonic()
            compose_stack.compose("up", "-d", "--wait", *args)
            timings[step] = time.monotonic() - started
        replicas = len(compose_stack.container_ids("placement"))
    print(
        f"rescale: up --scale placement=5 {timings['to 5']:.1f}s, up {timings['back to the default']:.1f}s; "
        f"{book.summary()}"
    )
    assert replicas == 3
    stack.wait_for_up(3, timeout=30)
    assert book.read_failures == [], book.read_failures[:5]
    assert (book.in_doubt, book.refused) == ([], {}), (book.in_doubt[:5], book.refused)
    assert book.outcomes["acknowledged"] > 20
    assert book.verify(placement_url, admin_headers) == []
    assert unbalanced(placement_url, admin_headers, providers) == []
