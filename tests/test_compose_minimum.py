"""The oldest Compose v2 docs/install.md and placedock stack promise
(stack.COMPOSE_MINIMUM), installed by tools/install-compose into a private
plugin dir (DOCKER_CONFIG), runs the stack: `config` of every mode gives the
merge the files ask for, `!reset`s included, and a noauth stack builds, comes
up with `up -d --wait --scale placement=2`, answers through haproxy and goes
with `down -v`.

PLACEDOCK_COMPOSE_VERSION=2.18.1 runs it with another release (one that
tools/install-compose knows): the release before the minimum fails here.

The module owns the compose project placedock-compose-min and removes it,
volumes included."""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml
from placedock.stack import compose as stack

PROJECT = "placedock-compose-min"
REPLICAS = 2
# Every mode, and the database, src and etcd files over each (placedock stack's MODES, DATABASES;
# compose.src.yaml, compose.etcd.yaml).
COMBINATIONS = [
    [*mode, *database, *src]
    for mode in stack.MODES.values()
    for database in stack.DATABASES.values()
    for src in ([], ["compose.src.yaml"], ["compose.etcd.yaml"])
]
IDS = ["+".join(name.removesuffix(".yaml") for name in files) for files in COMBINATIONS]


@pytest.fixture(scope="module")
def version():
    return os.environ.get("PLACEDOCK_COMPOSE_VERSION", ".".join(map(str, stack.COMPOSE_MINIMUM)))


@pytest.fixture(scope="module")
def compose_env(version):
    """The environment in which `docker compose` is that version (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="placedock-docker-config-") as config:
        subprocess.run(
            [str(stack.ROOT / "tools" / "install-compose"), "--version", version, f"{config}/cli-plugins"],
            check=True,
            timeout=300,
        )
        env = {**os.environ, **stack.ports(), "DOCKER_CONFIG": config}
        # compose.src.yaml needs a tree to mount; `config` only names it.
        env.setdefault("PLACEMENT_SRC", config)
        yield env


def compose(env, files, *args, **kwargs):
    command = ["docker", "compose", *(arg for name in files for arg in ("-f", name)), "-p", PROJECT, *args]
    return subprocess.run(command, cwd=stack.ROOT, env=env, text=True, **kwargs)


class ResetLoader(yaml.SafeLoader):
    """Reads `!reset ANYTHING` as RESET."""


RESET = object()
ResetLoader.add_constructor("!reset", lambda loader, node: RESET)


def resets(files):
    """(service, key) of every `!reset` in the files' services."""
    found = []
    for name in files:
        services = yaml.load((stack.ROOT / name).read_text(), Loader=ResetLoader).get("services") or {}  # noqa: S506
        for service, keys in services.items():
            found += [(name, service, key) for key, value in (keys or {}).items() if value is RESET]
    return found


def test_the_version_is_installed_and_stack_py_accepts_it(version, compose_env, monkeypatch):
    done = compose(compose_env, [], "version", "--short", capture_output=True, check=True)
    assert done.stdout.strip().lstrip("v") == version
    monkeypatch.setenv("DOCKER_CONFIG", compose_env["DOCKER_CONFIG"])
    stack.compose_command.cache_clear()
    try:
        assert stack.compose_command() == ["docker", "compose"]
    finally:
        stack.compose_command.cache_clear()


@pytest.mark.parametrize("files", COMBINATIONS, ids=IDS)
def test_config_merges_every_mode_as_the_files_say(files, compose_env):
    done = compose(compose_env, files, "config", "--format", "json", capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    # `!reset` drops what the files before set; an old compose reads it as null and keeps it.
    kept = {
        f"{service}.{key} (!reset in {name})": services[service][key]
        for name, service, key in resets(files)
        if services[service].get(key)
    }
    assert not kept, f"compose kept what `!reset` removes: {kept}"


def test_noauth_builds_comes_up_answers_and_goes(compose_env):
    files = stack.MODES["noauth"]
    compose(compose_env, files, "down", "-v", "--remove-orphans", capture_output=True, timeout=300)
    passed = False
    try:
        started = time.monotonic()
        compose(compose_env, files, "build", "-q", check=True, timeout=900)
        compose(
            compose_env,
            files,
            *("up", "-d", "--wait", "--wait-timeout", "150", "--scale", f"placement={REPLICAS}"),
            check=True,
            timeout=240,
        )
        url = f"http://127.0.0.1:{compose_env['PLACEMENT_PORT']}"
        servers = set()
        for _ in range(10):
            resp = requests.get(f"{url}/resource_providers", headers={"x-auth-token": "admin"}, timeout=10)
            assert resp.status_code == 200, resp.text
            servers.add(resp.headers["X-Placedock-Server"])
        assert len(servers) == REPLICAS, servers
        print(f"\ncompose-min: noauth x{REPLICAS} built, up and answering in {time.monotonic() - started:.1f}s")
        passed = True
    finally:
        if not passed:
            log = Path(tempfile.mkstemp(prefix=f"{PROJECT}-", suffix=".log")[1])
            with log.open("w") as out:
                compose(compose_env, files, "ps", "-a", stdout=out, stderr=subprocess.STDOUT)
                compose(compose_env, files, "logs", "--no-color", stdout=out, stderr=subprocess.STDOUT)
            print(f"\ncompose-min: every container's log in {log}")
        down = compose(compose_env, files, "down", "-v", "--remove-orphans", capture_output=True, timeout=300)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not left and not volumes, f"down -v left {left} {volumes}"
