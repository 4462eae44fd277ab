"""Security posture: non-root everywhere, no secret baked into an image, only
loopback ports published, and keystone mode refusing the noauth token."""

import json
import re
from pathlib import Path

import pytest
import requests
import stack

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ["placement", "keystone", "mariadb", "memcached", "haproxy"]


def secret_values():
    """Every password the env files define, bare or inside a connection URL."""
    values = set()
    for env_file in (ROOT / "env").glob("*.env"):
        for key, value in stack.env_file(env_file.name).items():
            if "PASSWORD" in key:
                values.add(value)
            values.update(re.findall(r"://[^:/@]+:([^@/]+)@", value))
    assert len(values) >= 4
    return values


@pytest.mark.parametrize("name", IMAGES)
def test_image_runs_as_a_named_non_root_user(name):
    user = stack.docker("image", "inspect", "-f", "{{.Config.User}}", stack.image(name))
    assert user not in ("", "root", "0", "0:0")


@pytest.mark.parametrize("name", IMAGES)
def test_no_secret_in_image_history_or_config(name):
    baked = stack.docker("history", "--no-trunc", stack.image(name)) + stack.docker(
        "image", "inspect", stack.image(name)
    )
    leaked = [value for value in secret_values() if value in baked]
    assert leaked == []


def test_every_running_process_is_non_root(compose_stack):
    running = [c for c in compose_stack.container_ids() if stack.container_health(c) not in ("exited", "missing")]
    assert len(running) >= 7  # mariadb, memcached, keystone, haproxy, 3 placement
    for container in running:
        assert stack.docker("exec", container, "id", "-u") != "0", container


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
