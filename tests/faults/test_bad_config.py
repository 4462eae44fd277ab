"""Bad configuration: every case stops the placement container with a non-zero
exit within 15 s, and its last log line names the problem and the variable.
Where waiting is right (a database or memcached that may still be starting),
the wait is logged and bounded by DB_WAIT_TIMEOUT. And the control cases:
good settings serve, a password that must be escaped in the URL included."""

import subprocess
import time
import uuid
from urllib.parse import quote

import pytest
from placedock.stack import compose as stack

IMAGE = stack.image("placement")
GOOD_DB = "mysql+pymysql://placement:faults-dev-password@{host}/placement"
KEYSTONE = {
    "OS_API__AUTH_STRATEGY": "keystone",
    "OS_KEYSTONE_AUTHTOKEN__AUTH_URL": "http://keystone.invalid:5000/v3",
    "OS_KEYSTONE_AUTHTOKEN__PASSWORD": "faults-dev-password",
}


@pytest.fixture(scope="module")
def network():
    """A network with a real mariadb on it, for the cases that need a server."""
    name = f"placedock-faults-{uuid.uuid4().hex[:8]}"
    db_host = f"{name}-mariadb"
    subprocess.run(["docker", "network", "create", name], check=True, capture_output=True)
    try:
        subprocess.run(
            [
                "docker", "run", "-d", "--name", db_host, "--network", name,
                "-e", "OS_PLACEMENT_DATABASE__CONNECTION=" + GOOD_DB.format(host="mariadb"),
                stack.image("mariadb"),
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while stack.container_health(db_host) != "healthy":
            assert time.monotonic() < deadline, "mariadb did not become healthy"
            time.sleep(0.5)
        yield {"name": name, "db": db_host}
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", db_host], capture_output=True)
        subprocess.run(["docker", "network", "rm", name], capture_output=True)


def run_placement(network, env):
    args = ["docker", "run", "--rm", "--network", network["name"]]
    for key, value in env.items():
        args += ["-e", f"{key}={value.format(db=network['db'])}"]
    started = time.monotonic()
    done = subprocess.run([*args, IMAGE], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, time.monotonic() - started, lines


NOAUTH = {"OS_API__AUTH_STRATEGY": "noauth2"}
CASES = {
    "no auth strategy": ({}, "OS_API__AUTH_STRATEGY is not set"),
    "unknown auth strategy": ({"OS_API__AUTH_STRATEGY": "noauth"}, "OS_API__AUTH_STRATEGY=noauth is not supported"),
    "bad DB_SYNC": ({**NOAUTH, "DB_SYNC": "yes"}, "DB_SYNC=yes is not valid"),
    "bad DB_SCHEMA_WAIT": ({**NOAUTH, "DB_SCHEMA_WAIT": "yes"}, "DB_SCHEMA_WAIT=yes is not valid"),
    "secret file that is not there": (
        {**NOAUTH, "OS_PLACEMENT_DATABASE__CONNECTION_FILE": "/run/secrets/placement-db-connection"},
        "OS_PLACEMENT_DATABASE__CONNECTION_FILE=/run/secrets/placement-db-connection: no readable file there",
    ),
    "malformed database URL": (
        {**NOAUTH, "OS_PLACEMENT_DATABASE__CONNECTION": "mariadb:placement"},
        "OS_PLACEMENT_DATABASE__CONNECTION is not a database URL",
    ),
    "unsupported database driver": (
        {**NOAUTH, "OS_PLACEMENT_DATABASE__CONNECTION": "postgresql://p:p@{db}/placement"},
        "OS_PLACEMENT_DATABASE__CONNECTION uses driver 'postgresql'",
    ),
    "unreachable database host": (
        {
            **NOAUTH,
            "DB_WAIT_TIMEOUT": "5",
            "OS_PLACEMENT_DATABASE__CONNECTION": GOOD_DB.format(host="no-such-db-host"),
        },
        "OS_PLACEMENT_DATABASE__CONNECTION: no database at no-such-db-host:3306/placement after 5s (DB_WAIT_TIMEOUT)",
    ),
    "wrong database password": (
        {**NOAUTH, "OS_PLACEMENT_DATABASE__CONNECTION": "mysql+pymysql://placement:wrong@{db}/placement"},
        "OS_PLACEMENT_DATABASE__CONNECTION: the server rejected the user or password",
    ),
    "database the account may not use": (
        {**NOAUTH, "OS_PLACEMENT_DATABASE__CONNECTION": "mysql+pymysql://placement:faults-dev-password@{db}/nova"},
        "OS_PLACEMENT_DATABASE__CONNECTION: the user may not use that database",
    ),
    "bad DB_WAIT_TIMEOUT": ({**NOAUTH, "DB_WAIT_TIMEOUT": "soon"}, "DB_WAIT_TIMEOUT='soon' is not a number"),
    "option value that does not parse": (
        {**NOAUTH, "OS_PLACEMENT_DATABASE__MAX_POOL_SIZE": "many"},
        "OS_PLACEMENT_DATABASE__MAX_POOL_SIZE: not a valid value",
    ),
    "keystone mode without its password": (
        {k: v for k, v in KEYSTONE.items() if k != "OS_KEYSTONE_AUTHTOKEN__PASSWORD"},
        "OS_KEYSTONE_AUTHTOKEN__PASSWORD is not set",
    ),
    "keystone mode without auth_url": (
        {k: v for k, v in KEYSTONE.items() if k != "OS_KEYSTONE_AUTHTOKEN__AUTH_URL"},
        "OS_KEYSTONE_AUTHTOKEN__AUTH_URL is not set",
    ),
    "PLACEMENT_SRC without a placement tree": (
        {**NOAUTH, "PLACEMENT_SRC": "/var/lib/placement"},
        "PLACEMENT_SRC=/var/lib/placement has no placement/__init__.py readable by uid 42482",
    ),
    "unreachable memcached": (
        {**KEYSTONE, "DB_WAIT_TIMEOUT": "5", "OS_KEYSTONE_AUTHTOKEN__MEMCACHED_SERVERS": "no-such-memcached:11211"},
        "OS_KEYSTONE_AUTHTOKEN__MEMCACHED_SERVERS: no memcached at no-such-memcached:11211 after 5s",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_configuration_stops_the_container_and_names_the_variable(network, case):
    env, expected = CASES[case]
    if "OS_PLACEMENT_DATABASE__CONNECTION" not in env:
        env = {**env, "OS_PLACEMENT_DATABASE__CONNECTION": GOOD_DB.format(host="{db}")}
    status, seconds, lines = run_placement(network, env)
    assert status != 0, lines
    assert seconds < 15, f"took {seconds:.1f}s"
    assert expected in lines[-1], lines[-5:]
    assert not any("Traceback" in line for line in lines), lines


@pytest.mark.parametrize("case", ["unreachable database host", "unreachable memcached"])
def test_waiting_for_a_dependency_is_logged(network, case):
    env, _ = CASES[case]
    status, _, lines = run_placement(network, {"OS_PLACEMENT_DATABASE__CONNECTION": GOOD_DB.format(host="{db}"), **env})
    assert status != 0
    assert sum("placedock: waiting for" in line for line in lines) >= 2, lines


def test_good_configuration_serves(network):
    """The control case: the same harness with good settings starts placement,
    and uwsgi takes its worker count from the environment."""
    name = f"{network['name']}-good"
    subprocess.run(
        [
            "docker", "run", "-d", "--name", name, "--network", network["name"],
            "-e", "OS_API__AUTH_STRATEGY=noauth2", "-e", "DB_SYNC=True", "-e", "UWSGI_PROCESSES=3",
            "-e", "OS_PLACEMENT_DATABASE__CONNECTION=" + GOOD_DB.format(host=network["db"]),
            IMAGE,
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while stack.container_health(name) != "healthy":
            assert stack.container_health(name) != "exited", stack.container_logs(name)
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert stack.container_logs(name).count("spawned uWSGI worker") == 3
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def wait_healthy(container, timeout=60):
    """Wait for a container's healthcheck to pass; fail with its log if it exits."""
    deadline = time.monotonic() + timeout
    while (health := stack.container_health(container)) != "healthy":
        assert health != "exited", stack.container_logs(container)[-3000:]
        assert time.monotonic() < deadline, f"{container} not healthy within {timeout}s: {health}"
        time.sleep(0.5)


# Each of @ : / % # must be escaped in a URL's password (%40 %3A %2F %25 %23),
# and the quote and backslash in SQL: SQLAlchemy (placement, keystone, the
# preflight) decodes the URL, and mariadb must create the account with the
# same, decoded password.
ESCAPED_PASSWORD = "dev-@:/%#'\\-password"  # noqa: S105 - dev-only test data


def test_a_password_escaped_in_the_url_works_end_to_end(network):
    """mariadb creates the accounts with the decoded password; a noauth
    placement migrates and serves GET /resource_providers with it, and
    keystone migrates its database with it (keystone-manage db_sync)."""
    encoded = quote(ESCAPED_PASSWORD, safe="")
    assert "%40%3A%2F%25%23%27%5C" in encoded
    db = f"{network['name']}-escaped-db"
    api = f"{network['name']}-escaped-api"
    url = f"mysql+pymysql://placement:{encoded}@{db}/placement?charset=utf8"
    keystone_url = f"mysql+pymysql://keystone:{encoded}@{db}/keystone?charset=utf8"
    try:
        subprocess.run(
            ["docker", "run", "-d", "--name", db, "--network", network["name"],
             "-e", f"OS_PLACEMENT_DATABASE__CONNECTION={url}", "-e", f"OS_DATABASE__CONNECTION={keystone_url}",
             stack.image("mariadb")],
            check=True, capture_output=True,
        )  # fmt: skip
        wait_healthy(db)
        login = subprocess.run(
            ["docker", "exec", "-e", f"MYSQL_PWD={ESCAPED_PASSWORD}", db]
            + ["mariadb", "--protocol=tcp", "-h", "127.0.0.1", "-u", "placement", "placement", "-e", "SELECT 1"],
            capture_output=True,
            text=True,
        )
        assert login.returncode == 0, f"the decoded password does not log in: {login.stderr.strip()}"

        subprocess.run(
            ["docker", "run", "-d", "--name", api, "--network", network["name"],
             "-e", "OS_API__AUTH_STRATEGY=noauth2", "-e", "DB_SYNC=True",
             "-e", f"OS_PLACEMENT_DATABASE__CONNECTION={url}", IMAGE],
            check=True, capture_output=True,
        )  # fmt: skip
        wait_healthy(api, timeout=120)  # migrations on an empty database first
        get = (
            "import urllib.request as u; print(u.urlopen(u.Request('http://127.0.0.1:8778/resource_providers',"
            " headers={'x-auth-token': 'admin'}), timeout=10).read().decode())"
        )
        body = stack.docker("exec", api, "python3", "-c", get)
        assert '"resource_providers": []' in body, body

        keystone = subprocess.run(
            ["docker", "run", "--rm", "--network", network["name"], "-e", f"OS_DATABASE__CONNECTION={keystone_url}",
             stack.image("keystone"), "keystone-manage", "db_sync"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert keystone.returncode == 0, (keystone.stdout + keystone.stderr)[-3000:]
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", api, db], capture_output=True)
