"""Your own placement tree in the stack (compose.src.yaml), with the
openstack-placement 16.0.0 sdist standing in for a checkout: an edit is served
by every replica within 5 s with no failed request; a tree that does not
import takes one replica out, says why in the logs, and the others keep
serving; a new migration is applied by the next `up`.

The module owns the compose project placedock-src and removes it, volumes
included."""

import re
import subprocess
import sys
import tarfile
import time
import uuid
from datetime import datetime
from urllib.parse import urlsplit

import pytest
import requests
from placedock.stack import compose as stack
from placedock.stack.compose import wait_until
from placedock.traffic.ledger import Traffic

PROJECT = "placedock-src"
RELEASE = "16.0.0"
REPLICAS = 3
SERVED_WITHIN = 5.0
LOAD_PATHS = ("/resource_providers", "/traits?name=startswith:HW_CPU", "/resource_classes")
ROOT_HANDLER = "placement/handlers/root.py"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The release's sdist, unpacked: what a placement checkout holds."""
    where = tmp_path_factory.mktemp("placement-src")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--no-binary", ":all:", "--no-deps", "--dest", str(where), f"openstack-placement=={RELEASE}",
        ],
        check=True, timeout=300,
    )  # fmt: skip
    (sdist,) = where.glob("openstack_placement-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(where, filter="data")
    root = where / f"openstack_placement-{RELEASE}"
    # The replicas run as their own user: the tree must be readable by others.
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return root


@pytest.fixture(scope="module")
def src_stack(tree, request):
    project = stack.Stack("noauth", project=PROJECT, extra=["compose.src.yaml"], PLACEMENT_SRC=str(tree))
    project.down()
    failed = request.session.testsfailed
    try:
        started = time.monotonic()
        project.up(REPLICAS)
        stack.wait_for_up(REPLICAS)
        up = time.monotonic() - started
        # Each replica starts its standby uwsgi a few seconds after it serves:
        # an edit before that is loaded from cold, several seconds on 2 cores.
        warm = stack.wait_until(
            lambda: project.logs("placement").count("placedock: standby uwsgi warm") >= REPLICAS,
            timeout=60,
            step=0.5,
            what="a warm standby in every replica",
        )
        print(f"\nsrc: {REPLICAS} replicas on {tree.name} UP in {up:.1f}s, their standbys warm {warm:.1f}s later")
        yield project
    finally:
        if request.session.testsfailed > failed:
            project.dump()
        project.down()


def poll_front_door(url, wanted, servers, timeout):
    """GET / through the front door until every server in `servers` has
    answered with a body for which wanted(body) holds. Returns ({server:
    seconds until it first did}, requests sent, failures)."""
    started = time.monotonic()
    first, sent, failures = {}, 0, []
    while set(first) != servers and time.monotonic() - started < timeout:
        sent += 1
        try:
            resp = requests.get(url + "/", timeout=10)
        except requests.RequestException as exc:
            failures.append(repr(exc))
            continue
        if resp.status_code != 200:
            failures.append(f"{resp.status_code} {resp.text[:200]}")
        elif wanted(resp.json()) and resp.headers["X-Placedock-Server"] not in first:
            first[resp.headers["X-Placedock-Server"]] = time.monotonic() - started
        time.sleep(0.01)
    return first, sent, failures


def mark_root_document(path, token):
    """Edit the version document: a field `placedock_edit` with `token`."""
    text = re.sub(r"\s*'placedock_edit': '\w+',", "", path.read_text())
    path.write_text(text.replace("'status': 'CURRENT',", f"'status': 'CURRENT', 'placedock_edit': '{token}',", 1))


def replica_health(project):
    return sorted(stack.container_health(c) for c in project.container_ids("placement"))


def test_an_edit_is_served_by_every_replica_within_5s_with_no_failed_request(
    src_stack, tree, placement_url, admin_headers
):
    servers = set(stack.up_servers())
    assert len(servers) == REPLICAS
    token = uuid.uuid4().hex[:12]
    with Traffic(placement_url, admin_headers, LOAD_PATHS) as load:
        time.sleep(0.5)
        edited = time.time()
        mark_root_document(tree / ROOT_HANDLER, token)
        first, sent, failures = poll_front_door(
            placement_url, lambda body: body["versions"][0].get("placedock_edit") == token, servers, timeout=20
        )
    times = ", ".join(f"{server} {seconds:.2f}s" for server, seconds in sorted(first.items(), key=lambda kv: kv[1]))
    print(f"\nsrc: edit served by {times}; {sent} GET / ({len(failures)} failed), and {load.summary()}")
    assert set(first) == servers, f"not every replica served the edit: {first}"
    assert max(first.values()) <= SERVED_WITHIN, first
    assert failures == [], failures[:5]
    assert load.read_failures == [], load.read_failures[:5]
    # One after another, not all at once: no two replicas' reloads overlap.
    reloads = sorted(reload_intervals(src_stack, since=edited))
    assert len(reloads) == REPLICAS, reloads
    for (_, earlier_end), (later_start, _) in zip(reloads, reloads[1:], strict=False):
        assert later_start >= earlier_end - 0.1, reloads


def reload_intervals(project, since):
    """(start, end) of each reload that ended after `since`, in seconds since
    the epoch: a reload's log line is stamped when it ends and says how long
    it took."""
    logs = project.compose("logs", "--no-color", "--timestamps", "placement", capture=True).stdout
    line = re.compile(r"\| (\S+)T(\S+?)(?:\.(\d+))?Z placedock: .* changed: reloaded in ([\d.]+)s")
    intervals = []
    for match in line.finditer(logs):
        date, clock, fraction, took = match.groups()
        end = datetime.fromisoformat(f"{date}T{clock}+00:00").timestamp() + float(f"0.{fraction or 0}")
        if end >= since:
            intervals.append((end - float(took), end))
    return intervals


def test_a_tree_that_does_not_import_takes_one_replica_out_and_the_others_serve(
    src_stack, tree, placement_url, admin_headers
):
    # A good edit of its own first, served everywhere: what the others keep serving.
    handler = tree / ROOT_HANDLER
    token = uuid.uuid4().hex[:12]
    mark_root_document(handler, token)
    servers = set(stack.up_servers())
    first, _, failures = poll_front_door(
        placement_url, lambda body: body["versions"][0].get("placedock_edit") == token, servers, timeout=20
    )
    assert set(first) == servers and failures == [], (first, failures[:5])
    good = handler.read_text()
    with Traffic(placement_url, admin_headers, ("/", *LOAD_PATHS)) as load:
        handler.write_text(good + "\n\ndef broken(:\n    pass\n")
        try:
            out = wait_until(lambda: "unhealthy" in replica_health(src_stack), timeout=30, step=0.2)
            time.sleep(3)  # and only that one: the others keep the code they run
            health = replica_health(src_stack)
            up = stack.up_servers()
            logs = src_stack.logs("placement")
            # The others still serve the last good tree.
            bodies = [requests.get(placement_url + "/", timeout=10).json() for _ in range(6)]
        finally:
            handler.write_text(good)
        back = wait_until(lambda: replica_health(src_stack) == ["healthy"] * REPLICAS, timeout=30, step=0.2)
        stack.wait_for_up(REPLICAS, timeout=10)
    print(
        f"\nsrc: syntax error: one replica unhealthy after {out:.1f}s, healthy {back:.1f}s after the fix; "
        f"{load.summary()}"
    )
    assert health == ["healthy"] * (REPLICAS - 1) + ["unhealthy"], health
    assert len(up) == REPLICAS - 1, up
    # The traceback's last line, and placedock's one line naming file and line.
    assert re.search(r"^\S*placement-\d+ +\| SyntaxError: invalid syntax$", logs, re.M), logs[-3000:]
    assert re.search(
        r"placedock: placement does not load: /opt/placement-src/placement/handlers/root\.py:\d+: SyntaxError: ", logs
    ), logs[-3000:]
    assert all(body["versions"][0].get("placedock_edit") == token for body in bodies), bodies
    assert load.read_failures == [], load.read_failures[:5]


def test_a_new_migration_is_applied_by_the_next_up(src_stack, tree):
    versions = tree / "placement/db/sqlalchemy/alembic/versions"
    text = "\n".join(path.read_text() for path in versions.glob("*.py"))
    revisions = set(re.findall(r"^revision = '(\w+)'", text, re.M))
    (head,) = revisions - set(re.findall(r"^down_revision = '(\w+)'", text, re.M))
    revision = uuid.uuid4().hex[:12]
    table = f"placedock_probe_{revision}"
    migration = versions / f"{revision}_placedock_probe.py"
    migration.write_text(
        f'"""placedock probe\n\nRevision ID: {revision}\nRevises: {head}\n"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = '{revision}'\ndown_revision = '{head}'\nbranch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade():\n    op.create_table('{table}', sa.Column('id', sa.Integer, primary_key=True))\n"
    )
    migration.chmod(0o644)
    src_stack.up(REPLICAS, build=False)
    stack.wait_for_up(REPLICAS)

    url = urlsplit(stack.env_file("placement-db.env")["OS_PLACEMENT_DATABASE__CONNECTION"])
    (mariadb,) = src_stack.container_ids("mariadb")

    def sql(query):
        login = [f"-u{url.username}", f"-p{url.password}", url.path.lstrip("/")]
        return stack.docker("exec", mariadb, "mariadb", "-N", *login, "-e", query)

    assert sql("SELECT version_num FROM alembic_version") == revision
    assert sql(f"SHOW TABLES LIKE '{table}'") == table
