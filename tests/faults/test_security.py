"""Security posture: every live process in every container non-root; no secret
in any image layer, in any log, in the environment of a service that does not
use it, or in a container's own files except where the service needs it; only
loopback ports published, and keystone mode refusing the noauth token."""

import functools
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests
from placedock.stack import compose as stack

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ["placement", "keystone", "mariadb", "memcached", "haproxy"]


@functools.cache
def secrets():
    """{value: where it is defined} of every password the env files define,
    bare or inside a connection URL (read once: every file scanned asks)."""
    found = {}
    for env_file in (ROOT / "env").glob("*.env"):
        for key, value in stack.env_file(env_file.name).items():
            values = re.findall(r"://[^:/@]+:([^@/]+)@", value) + ([value] if "PASSWORD" in key else [])
            found.update({each: f"{env_file.name} {key}" for each in values})
    assert len(found) >= 4
    return found


def leaks(data, where):
    """'WHERE holds SECRET' for every secret in `data` (bytes)."""
    return [f"{where} holds {name}" for value, name in secrets().items() if value.encode() in data]


def tar_leaks(stream, where):
    """Leaks in every regular file of a tar stream, by member."""
    found = []
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        for member in archive:
            if member.isfile():
                found += leaks(archive.extractfile(member).read(), f"{where}:{member.name}")
    return found


def image_layer_leaks(image):
    """Leaks in the files of every layer of an image (docker save), and in its history and config."""
    found = leaks(
        (stack.docker("history", "--no-trunc", image) + stack.docker("image", "inspect", image)).encode(), image
    )
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        for member in outer.getmembers():
            if member.name.endswith("layer.tar"):
                found += tar_leaks(outer.extractfile(member), f"{image} layer {member.name.split('/')[0][:12]}")
    return found


def processes(container):
    """[uid, pid, command] of each process of a running container (docker top)."""
    return [row.split(None, 2) for row in stack.docker("top", container, "-o", "uid,pid,comm").splitlines()[1:]]


def root_processes(container):
    """The processes of a running container that run as root."""
    return [row for row in processes(container) if row[0] == "0"]


@pytest.mark.parametrize("name", IMAGES)
def test_image_runs_as_a_named_non_root_user(name):
    user = stack.docker("image", "inspect", "-f", "{{.Config.User}}", stack.image(name))
    assert user not in ("", "root", "0", "0:0")


@pytest.mark.parametrize("name", IMAGES)
def test_no_secret_in_any_image_layer_history_or_config(name):
    assert image_layer_leaks(stack.image(name)) == []


def test_every_live_process_in_every_container_is_non_root(compose_stack):
    running = [c for c in compose_stack.container_ids() if stack.container_health(c) not in ("exited", "missing")]
    assert len(running) >= 7  # mariadb, memcached, keystone, haproxy, 3 placement
    found = {stack.container_name(c): processes(c) for c in running}
    assert {name: [row for row in rows if row[0] == "0"] for name, rows in found.items()} == dict.fromkeys(found, [])
    # Each container did list its processes.
    assert all(found.values()), found


def test_the_root_process_check_sees_a_root_process():
    """The check above can fail: a container of our own image run as root."""
    container = stack.docker(
        "run", "-d", "--rm", "--user", "0", "--entrypoint", "sleep", stack.image("memcached"), "60"
    )
    try:
        assert [command for _, _, command in root_processes(container)] == ["sleep"]
    finally:
        stack.remove(container)


# The services that are given no secret; the others are given theirs, in
# their environment (env/*.env), and nothing else of them reaches a log.
NO_SECRET = {"haproxy", "memcached"}


def test_no_secret_in_any_log_or_in_a_service_that_does_not_use_it(compose_stack):
    found = []
    containers = compose_stack.container_ids(all_states=True)
    for container in containers:
        name = stack.container_name(container)
        found += leaks(stack.container_logs(container).encode(), f"{name} log")
        service = stack.docker("inspect", "-f", '{{index .Config.Labels "com.docker.compose.service"}}', container)
        if service in NO_SECRET:
            found += leaks("\n".join(stack.container_env(container).values()).encode(), f"{name} environment")
    assert len(containers) >= 9
    assert found == []


def file_leaks(container, path, where):
    """Leaks in one file of a container; none for a directory (docker diff
    lists the files in it themselves)."""
    done = subprocess.run(["docker", "cp", f"{container}:{path}", "-"], capture_output=True)
    if done.returncode != 0:
        return []
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        first = archive.next()
        if first is None or not first.isfile():
            return []
        return leaks(archive.extractfile(first).read(), f"{where}:{path}")


def test_no_secret_in_a_container_s_own_files(compose_stack):
    """What each container wrote (docker diff: its writable layer, not the
    volumes) holds no secret. mariadb's init file did, until it was removed
    once the server had run it."""
    found, files = [], 0
    for container in compose_stack.container_ids():
        name = stack.container_name(container)
        changed = [line.split(" ", 1)[1] for line in stack.docker("diff", container).splitlines() if line[0] in "AC"]
        files += len(changed)
        for path in changed:
            found += file_leaks(container, path, name)
    assert files > 0
    assert found == []


def test_only_loopback_ports_are_published(compose_stack):
    published = {}
    for container in compose_stack.container_ids():
        ports = json.loads(stack.docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", container))
        for bindings in ports.values():
            for binding in bindings or []:
                published[binding["HostPort"]] = binding["HostIp"]
    assert published, "nothing published at all"
    assert set(published.values()) == {"127.0.0.1"}, published


def test_keystone_mode_refuses_the_noauth_admin_token(placement_url, auth_mode):
    assert auth_mode == "keystone", "run this file against the keystone stack"
    resp = requests.get(f"{placement_url}/resource_providers", headers={"x-auth-token": "admin"}, timeout=10)
    assert resp.status_code == 401
