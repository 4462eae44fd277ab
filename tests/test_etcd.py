"""Options from etcd, changed live (compose.etcd.yaml, placement/placedock_etcd.py,
placement/reloader.py), on the keystone stack of `tox -e etcd` (3 replicas):

* the keys' command refuses, before writing, an option placement does not
  have, a value of the wrong type and an option the environment overrides;
* the database password and then the keystone service user are rotated under
  reads and writes: new credentials added, the options changed in etcd, every
  replica on the new revision (one at a time: the lock's history shows no
  overlap), the old credentials dropped; no failed request;
* a database URL that does not answer stops the rollout at one replica (out
  of rotation, holding the lock), the others serve, and its fix heals it;
* etcd stopped under traffic: nothing fails; a replica restarted serves its
  last-known-good copy; a new one exits with one line; etcd back, a change
  reaches every replica again.

Each test prints what it measured (the rollout's time, the traffic)."""

import json
import os
import re
import secrets
import subprocess
import time
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import requests
from placedock.stack import compose as stack
from placedock.stack.compose import wait_until
from placedock.traffic.ledger import Traffic, unbalanced, vcpu_providers

REPLICAS = 3
READ_PATHS = ("/", "/resource_providers?name=etcd-none", "/traits?name=startswith:HW_CPU", "/resource_classes")
DB_WAIT = float(os.environ.get("DB_WAIT_TIMEOUT", "60"))
CONNECTION = "placement_database.connection"


@pytest.fixture(scope="module")
def etcd_stack():
    return stack.Stack.running(os.environ["PLACEDOCK_PROJECT"])


def keys(project, *args, value=None, check=True):
    """placedock-etcd in a replica (docs/etcd.md); `value` is given on stdin."""
    done = subprocess.run(
        [*project.base, "exec", "-T", "placement", "placedock-etcd", *args],
        cwd=stack.ROOT, env=project.env, input=value or "", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"placedock-etcd {args[0]}: {done.returncode}: {done.stderr}")
    return done


def change(project, *assignments, value=None):
    """Set options in one transaction; the revision of the change."""
    out = keys(project, "set", *assignments, value=value).stdout
    return int(re.match(r"revision (\d+):", out).group(1))


def status(project):
    return json.loads(keys(project, "status", "--json").stdout)


def wait_rolled(project, revision, replicas=REPLICAS, timeout=120):
    """Seconds until `replicas` replicas serve the options of `revision`."""

    def rolled():
        rows = status(project)["replicas"]
        serving = [r for r in rows if r["revision"] == revision and r["state"] == "serving"]
        return len(serving) == replicas == len(rows)

    return wait_until(rolled, timeout=timeout, step=0.2, what=f"every replica on revision {revision}")


def lock_history(project, since):
    """The lock's holders from revision `since` on: (acquired, released, replica, host)."""
    rows = json.loads(keys(project, "history", "--json").stdout)
    return sorted(
        (r["acquired"], r.get("released"), r["replica"], r.get("host")) for r in rows if r["acquired"] >= since
    )


def assert_one_at_a_time(history, replicas=REPLICAS):
    """Every replica took the lock once and let it go before the next took it."""
    assert len(history) == replicas, history
    assert len({replica for _, _, replica, _ in history}) == replicas, history
    for (_, released, _, _), (acquired, _, _, _) in zip(history, history[1:], strict=False):
        assert released is not None and acquired >= released, history
    assert history[-1][1] is not None, history


def replica_health(project):
    return sorted(stack.container_health(c) for c in project.container_ids("placement"))


def sql(project, query):
    (mariadb,) = project.container_ids("mariadb")
    return stack.docker("exec", "-u", "0", mariadb, "mariadb", "-N", "-e", query)


def with_credentials(url, user, password):
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def with_host(url, host):
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


def assert_nothing_failed(book, url, headers, providers):
    assert book.read_failures == [], book.read_failures[:5]
    assert (book.in_doubt, dict(book.refused)) == ([], {}), (book.in_doubt[:5], book.refused)
    assert book.outcomes["acknowledged"] > 10, book.summary()
    assert book.verify(url, headers) == []
    assert unbalanced(url, headers, providers) == []


def test_the_stack_reads_its_options_from_etcd(etcd_stack):
    rows = status(etcd_stack)
    assert len(rows["replicas"]) == REPLICAS, rows
    assert {r["state"] for r in rows["replicas"]} == {"serving"}, rows
    assert {r["revision"] for r in rows["replicas"]} == {rows["latest"]}, rows
    listed = keys(etcd_stack, "list").stdout
    # The governed options were seeded from the env files, secrets masked.
    assert f"{CONNECTION}=****" in listed, listed
    assert "keystone_authtoken.password=****" in listed, listed
    assert "keystone_authtoken.username=placement" in listed, listed
    seeded = etcd_stack.logs("placement-db-sync")
    assert "etcd: placement_database.connection: seeded from OS_PLACEMENT_DATABASE__CONNECTION" in seeded, seeded


@pytest.mark.parametrize(
    ("assignment", "says"),
    [
        ("placement.no_such_option=1", "placement has no option 'no_such_option' in [placement]"),
        ("no_such_group.option=1", "placement has no option group [no_such_group]"),
        ("placement.max_allocation_candidates=many", "not a valid Int"),
        (
            "placement_database.max_pool_size=9",
            "OS_PLACEMENT_DATABASE__MAX_POOL_SIZE is set in the replicas' environment",
        ),
        ("DEFAULT.config_source=other", "says where configuration comes from"),
        ("nonsense", "use GROUP.OPTION=VALUE"),
    ],
)
def test_a_change_placement_would_not_take_is_refused_before_anything_is_written(etcd_stack, assignment, says):
    before = status(etcd_stack)["latest"]
    done = keys(etcd_stack, "set", "placement.max_allocation_candidates=1000", assignment, check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    # Not even the valid assignment beside it was written.
    assert status(etcd_stack)["latest"] == before


def test_the_database_password_is_rotated_under_load_with_no_failed_request(etcd_stack, placement_url, admin_headers):
    old = keys(etcd_stack, "get", CONNECTION).stdout.strip()
    old_user = urlsplit(old).username
    user, password = f"placement_{uuid.uuid4().hex[:6]}", secrets.token_urlsafe(18)
    # 1. The new credentials, beside the old ones.
    sql(
        etcd_stack,
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; GRANT ALL PRIVILEGES ON placement.* TO '{user}'@'%'",
    )
    new = with_credentials(old, user, password)
    providers = vcpu_providers(placement_url, admin_headers, "etcd-db")
    with Traffic(placement_url, admin_headers, READ_PATHS, providers, writers=2, pause=0.05) as book:
        time.sleep(2)
        # 2. The new URL in etcd (on stdin: no password in a process list).
        revision = change(etcd_stack, f"{CONNECTION}=-", value=new)
        rolled = wait_rolled(etcd_stack, revision)
        # 3. The old credentials dropped, once no replica uses them.
        sql(etcd_stack, f"DROP USER '{old_user}'@'%'")
        time.sleep(3)
        users = sql(etcd_stack, "SELECT DISTINCT user FROM information_schema.processlist WHERE db = 'placement'")
    history = lock_history(etcd_stack, revision)
    print(
        f"\netcd: database password rotated: every replica on revision {revision} {rolled:.1f}s after the change; "
        f"lock {[(a, r, who) for a, r, who, _ in history]}; {book.summary()}"
    )
    assert users.split() == [user], users
    assert_one_at_a_time(history)
    assert_nothing_failed(book, placement_url, admin_headers, providers)


def keystone(method, path, token, **kwargs):
    resp = requests.request(
        method, f"{stack.keystone_url()}{path}", headers={"x-auth-token": token}, timeout=10, **kwargs
    )
    resp.raise_for_status()
    return resp.json() if resp.content else None


def test_the_keystone_service_user_is_rotated_under_load_with_no_failed_request(
    etcd_stack, placement_url, admin_headers
):
    admin = stack.admin_token()
    old_user = keys(etcd_stack, "get", "keystone_authtoken.username").stdout.strip()
    user, password = f"placement-{uuid.uuid4().hex[:6]}", secrets.token_urlsafe(18)
    # 1. A new service user with the old one's roles (keystone/register.py).
    (project,) = keystone("GET", "/projects?name=service", admin)["projects"]
    made = keystone(
        "POST", "/users", admin, json={"user": {"name": user, "password": password, "domain_id": "default"}}
    )
    for role_name in ("service", "admin"):
        (role,) = keystone("GET", f"/roles?name={role_name}", admin)["roles"]
        keystone("PUT", f"/projects/{project['id']}/users/{made['user']['id']}/roles/{role['id']}", admin)
    providers = vcpu_providers(placement_url, admin_headers, "etcd-ks")
    with Traffic(placement_url, admin_headers, READ_PATHS, providers, writers=2, pause=0.05) as book:
        time.sleep(2)
        # 2. Name and password in one transaction: no replica loads one without the other.
        revision = change(
            etcd_stack, f"keystone_authtoken.username={user}", "keystone_authtoken.password=-", value=password
        )
        rolled = wait_rolled(etcd_stack, revision)
        # 3. The old user deleted (keystone revokes its tokens with it).
        (gone,) = keystone("GET", f"/users?name={old_user}", admin)["users"]
        keystone("DELETE", f"/users/{gone['id']}", admin)
        # New tokens, never validated before: each replica must validate them
        # at keystone with the new service user.
        fresh = [stack.admin_token() for _ in range(6)]
        answers = [
            requests.get(
                f"{placement_url}/resource_providers", headers={**admin_headers, "x-auth-token": token}, timeout=10
            )
            for token in fresh
            for _ in range(2)
        ]
    history = lock_history(etcd_stack, revision)
    print(
        f"\netcd: keystone service user rotated ({old_user} -> {user}): every replica on revision {revision} "
        f"{rolled:.1f}s after the change; lock {[(a, r, who) for a, r, who, _ in history]}; {book.summary()}"
    )
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text[:200] for a in answers]
    assert_one_at_a_time(history)
    assert_nothing_failed(book, placement_url, admin_headers, providers)


def test_a_database_that_does_not_answer_stops_the_rollout_at_one_replica(etcd_stack, placement_url, admin_headers):
    good = keys(etcd_stack, "get", CONNECTION).stdout.strip()
    before = status(etcd_stack)["latest"]
    providers = vcpu_providers(placement_url, admin_headers, "etcd-bad")
    with Traffic(placement_url, admin_headers, READ_PATHS, providers, writers=2, pause=0.05) as book:
        bad = change(etcd_stack, f"{CONNECTION}=-", value=with_host(good, "nowhere.invalid"))
        out = wait_until(lambda: "unhealthy" in replica_health(etcd_stack), timeout=DB_WAIT + 60, step=0.5)
        time.sleep(4)  # and it stays at one: the others keep the options they run
        health = replica_health(etcd_stack)
        stopped = status(etcd_stack)
        up = stack.up_servers()
        fixed = change(etcd_stack, f"{CONNECTION}=-", value=good)
        healed = wait_until(lambda: replica_health(etcd_stack) == ["healthy"] * REPLICAS, timeout=60, step=0.5)
        rolled = wait_rolled(etcd_stack, fixed, timeout=60)
        stack.wait_for_up(REPLICAS, timeout=20)
        after = status(etcd_stack)
    print(
        f"\netcd: an unreachable database host: one replica unhealthy {out:.1f}s after the change "
        f"(DB_WAIT_TIMEOUT {DB_WAIT:g}s), healthy {healed:.1f}s after the fix, every replica current "
        f"{rolled:.1f}s after it; {book.summary()}"
    )
    assert health == ["healthy"] * (REPLICAS - 1) + ["unhealthy"], health
    assert len(up) == REPLICAS - 1, up
    states = sorted((r["state"], r["revision"]) for r in stopped["replicas"])
    assert states == [("failed", bad)] + [("serving", before)] * (REPLICAS - 1), stopped
    (failed,) = [r for r in stopped["replicas"] if r["state"] == "failed"]
    assert stopped["lock"]["replica"] == failed["replica"], stopped
    assert stopped["failed"]["revision"] == bad, stopped
    logs = etcd_stack.logs("placement")
    assert "placement_database.connection changed: the options do not load" in logs
    assert re.search(
        r"placedock: etcd key /placedock/placement/placement_database/connection: no database at nowhere\.invalid", logs
    )
    assert after["failed"] is None and after["lock"] is None, after
    assert_nothing_failed(book, placement_url, admin_headers, providers)


def test_etcd_stopped_under_load_fails_nothing_and_changes_flow_again_once_back(
    etcd_stack, placement_url, admin_headers
):
    (etcd,) = etcd_stack.container_ids("etcd")
    replicas = sorted(etcd_stack.container_ids("placement"), key=stack.container_name)
    providers = vcpu_providers(placement_url, admin_headers, "etcd-down")
    try:
        with Traffic(placement_url, admin_headers, READ_PATHS, providers, writers=2, pause=0.05) as book:
            time.sleep(1)
            stack.docker("stop", etcd)
            time.sleep(3)
            # A replica restarted while etcd is away: its last-known-good copy.
            restarted = replicas[1]
            since = time.time()
            stack.docker("restart", restarted)
            back = wait_until(lambda: stack.container_health(restarted) == "healthy", timeout=90, step=0.5)
            restart_log = stack.container_logs(restarted, since=f"{since:.3f}")
            stack.wait_for_up(REPLICAS, timeout=20)
            # A new replica: nothing to fall back on, so one line and out.
            etcd_stack.scale(REPLICAS + 1)
            (new,) = set(etcd_stack.container_ids("placement", all_states=True)) - set(replicas)
            refused = "has no last-known-good copy"
            wait_until(
                lambda: refused in stack.container_logs(new), timeout=60, step=0.5, what="the new replica's refusal"
            )
            new_log = stack.container_logs(new)
            stack.docker("start", etcd)
            wait_until(lambda: stack.container_health(etcd) == "healthy", timeout=60, step=0.5)
            # The new replica comes up (its restart policy), and a change reaches all.
            wait_until(lambda: stack.container_health(new) == "healthy", timeout=90, step=0.5, what="the new replica")
            revision = change(etcd_stack, "placement.max_allocation_candidates=5000")
            rolled = wait_rolled(etcd_stack, revision, replicas=REPLICAS + 1, timeout=120)
    finally:
        stack.docker("start", etcd)
    etcd_stack.scale(REPLICAS)
    stack.wait_for_up(REPLICAS)
    print(
        f"\netcd: stopped under traffic: a restarted replica healthy in {back:.1f}s on its last-known-good copy; "
        f"a new replica refused until etcd was back; then a change on all {REPLICAS + 1} in {rolled:.1f}s; "
        f"{book.summary()}"
    )
    assert "using the last-known-good copy" in restart_log, restart_log[-2000:]
    lines = [line for line in new_log.splitlines() if refused in line]
    assert lines and all(
        line.startswith("placedock: etcd at http://etcd:2379 (OS_ETCD__ENDPOINTS) does not answer") for line in lines
    ), new_log[-2000:]
    assert "the watch on /placedock/placement is down" in etcd_stack.logs("placement")
    assert_nothing_failed(book, placement_url, admin_headers, providers)
