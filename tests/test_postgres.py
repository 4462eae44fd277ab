"""Placement on PostgreSQL (compose.postgres.yaml; tox -e postgres): what the
API writes is in PostgreSQL, the image's start-up checks name PostgreSQL's own
refusals in one line, DB_SYNC and DB_SCHEMA_WAIT work on it, and the server
stopped under reads and writes costs only fast JSON 503s while it is away."""

import subprocess
import time
import urllib.parse
import uuid

import pytest
from placedock.stack import compose as stack
from placedock.traffic.ledger import Traffic, unbalanced, vcpu_providers

# The bar: while the server is away every request is answered, a 503
# with Retry-After, within this many seconds.
OUTAGE_ANSWERED_WITHIN = 3.0


def stack_url():
    """Placement's URL in the stack (env/placement-postgres.env), parsed."""
    for line in (stack.ROOT / "env" / "placement-postgres.env").read_text().splitlines():
        name, _, value = line.partition("=")
        if name == "OS_PLACEMENT_DATABASE__CONNECTION":
            return urllib.parse.urlsplit(value)
    raise AssertionError("env/placement-postgres.env sets no OS_PLACEMENT_DATABASE__CONNECTION")


def url(database=None, password=None, host=None, scheme=None):
    """The stack's URL with what is given changed."""
    parts = stack_url()
    user, _, secret = parts.netloc.partition("@")[0].partition(":")
    netloc = f"{user}:{password or secret}@{host or parts.hostname}"
    return parts._replace(scheme=scheme or parts.scheme, netloc=netloc, path=f"/{database or 'placement'}").geturl()


@pytest.fixture(scope="module")
def postgres(compose_stack):
    if compose_stack.database != "postgres":
        pytest.fail(f"placement's database is {compose_stack.database}: run this with tox -e postgres")
    (container,) = compose_stack.container_ids("postgres")
    return container


def psql(container, sql, database="placement", **variables):
    """One query as the server's own superuser, over its socket; the rows, as
    text. psql quotes each variable itself (:'name' in `sql`)."""
    args = [arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")]
    return stack.docker("exec", "-i", container, "psql", "-X", "-tA", "-d", database, *args, input=sql)


def run_placement(compose_stack, *command, **env):
    """The placement image on the stack's network: (exit status, output lines)."""
    args = ["docker", "run", "--rm", "--network", f"{compose_stack.project}_default"]
    for key, value in {"OS_API__AUTH_STRATEGY": "noauth2", "DB_WAIT_TIMEOUT": "5", **env}.items():
        args += ["-e", f"{key}={value}"]
    done = subprocess.run([*args, stack.image("placement"), *command], capture_output=True, text=True, timeout=120)
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()


def test_what_the_api_writes_is_in_postgres(placement_url, admin_headers, provider, postgres):
    name = psql(postgres, "SELECT name FROM resource_providers WHERE uuid = :'uuid'", uuid=provider["uuid"])
    assert name == provider["name"]
    revision = psql(postgres, "SELECT version_num FROM alembic_version")
    assert revision, "no alembic revision: placement-db-sync did not migrate this database"
    # The role owns what it migrated: the entrypoint made it the database's owner.
    owners = psql(postgres, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert owners == "placement", owners


REFUSALS = {
    "wrong password": ({"password": "wrong"}, "the server rejected the user or password"),
    "database missing": ({"database": "nova"}, "the database does not exist on the server"),
    "server not up": (
        {"host": "no-such-postgres"},
        "no database at no-such-postgres:5432/placement after 5s (DB_WAIT_TIMEOUT)",
    ),
    "driver not named": ({"scheme": "postgresql"}, "uses driver 'postgresql'"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_at_start_with_one_line(compose_stack, postgres, case):
    changes, expected = REFUSALS[case]
    status, lines = run_placement(compose_stack, OS_PLACEMENT_DATABASE__CONNECTION=url(**changes))
    assert status == 1, lines
    assert lines[-1].startswith("placedock: OS_PLACEMENT_DATABASE__CONNECTION"), lines[-5:]
    assert expected in lines[-1], lines[-5:]
    assert not any("Traceback" in line for line in lines), lines


def test_db_sync_then_schema_wait_on_a_new_database(compose_stack, postgres):
    """DB_SYNC=True migrates a new database; DB_SCHEMA_WAIT=True (the
    Kubernetes init container) then finds the schema at its head."""
    database = f"sync_{uuid.uuid4().hex[:8]}"
    stack.docker("exec", postgres, "createdb", "-O", "placement", database)
    try:
        status, lines = run_placement(
            compose_stack,
            "true",
            DB_SYNC="True",
            DB_SCHEMA_WAIT="True",
            OS_PLACEMENT_DATABASE__CONNECTION=url(database=database),
        )
        assert status == 0, lines[-10:]
        assert any("DB_SYNC=True: running placement-manage db sync" in line for line in lines), lines
        assert any(line.startswith("placedock: schema at ") and line.endswith(": ready") for line in lines), lines
        revision = psql(postgres, "SELECT version_num FROM alembic_version", database=database)
        assert lines[-1] == f"placedock: schema at {revision}: ready", lines[-3:]
    finally:
        stack.docker("exec", postgres, "dropdb", database)


def test_server_stopped_under_reads_and_writes_costs_only_fast_503s(
    placement_url, admin_headers, compose_stack, postgres
):
    replicas = compose_stack.container_ids("placement")
    before = {c: stack.started_at(c) for c in replicas}
    providers = vcpu_providers(placement_url, admin_headers, "test-postgres-outage")
    paths = ("/resource_providers?name=outage-none", "/traits?name=startswith:HW_CPU")
    with Traffic(placement_url, admin_headers, paths, providers, writers=2, seconds=120) as book:
        time.sleep(3)
        stopped = time.monotonic() - book.started
        stack.docker("stop", postgres)
        time.sleep(3)
        stack.docker("start", postgres)
        stack.wait_until(lambda: stack.container_health(postgres) == "healthy", timeout=60, step=0.1)
        back = time.monotonic() - book.started
        time.sleep(10)
    failures = book.read_failures + book.in_doubt
    slowest = max(book.took["read failed"] + book.took["in doubt"], default=0)
    last = max((at for at, _, _ in failures), default=None)
    print(
        f"\npostgres stopped at {stopped:.1f}s, healthy again at {back:.1f}s: {book.summary()}; "
        f"{len(failures)} answered 503, the slowest in {slowest:.3f}s; "
        f"last failure {'none' if last is None else f'{last - back:+.1f}s from healthy'}"
    )
    # While it was away: placement's JSON 503, with Retry-After, fast; never a 500.
    statuses = {what.split()[0] for _, _, what in failures}
    assert statuses <= {"503"}, failures[:3]
    for _, _, what in failures:
        assert '"title": "Service Unavailable"' in what, what
    assert slowest < OUTAGE_ANSWERED_WITHIN, slowest
    assert failures, "no request met the outage: the traffic did not run through it"
    # Once it is back, nothing fails.
    assert last <= back, failures[-3:]
    # Writes: nothing refused, nothing lost, nothing half-applied.
    assert book.refused == {}, book.refused
    assert book.outcomes["acknowledged"] > 20, book.outcomes
    assert book.verify(placement_url, admin_headers) == []
    assert unbalanced(placement_url, admin_headers, providers) == []
    assert {c: stack.started_at(c) for c in replicas} == before
