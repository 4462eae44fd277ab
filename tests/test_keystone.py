"""Keystone mode beyond the gabbits: token validation is cached in memcached,
and the committed clouds.yaml agrees with the accounts the stack creates."""

import subprocess
from pathlib import Path

import pytest
import requests
import stack
import yaml

ROOT = Path(__file__).resolve().parent.parent


def memcached_stats(compose_stack):
    (container,) = compose_stack.container_ids("memcached")
    out = subprocess.run(
        [
            "docker", "exec", container, "bash", "-c",
            "exec 3<>/dev/tcp/127.0.0.1/11211; printf 'stats\\r\\nquit\\r\\n' >&3; cat <&3",
        ],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return {parts[1]: parts[2] for parts in (line.split() for line in out.splitlines()) if parts and parts[0] == "STAT"}


def test_validated_tokens_are_served_from_memcached_while_keystone_is_paused(
    placement_url, admin_headers, compose_stack
):
    # Validate the token once through every replica: the result goes to memcached.
    for _ in range(6):
        assert requests.get(f"{placement_url}/resource_providers", headers=admin_headers, timeout=10).ok
    hits_before = int(memcached_stats(compose_stack)["get_hits"])
    (keystone,) = compose_stack.container_ids("keystone")
    subprocess.run(["docker", "pause", keystone], check=True)
    try:
        # keystone cannot answer now: every 200 below was validated from the cache.
        for _ in range(9):
            resp = requests.get(f"{placement_url}/resource_providers", headers=admin_headers, timeout=10)
            assert resp.status_code == 200, resp.text
    finally:
        subprocess.run(["docker", "unpause", keystone], check=True)
    assert int(memcached_stats(compose_stack)["get_hits"]) >= hits_before + 9


@pytest.mark.parametrize(
    "cloud, prefix",
    [("placedock-keystone", "OS_BOOTSTRAP_"), ("placedock-keystone-demo", "PLACEDOCK_MEMBER_")],
)
def test_clouds_yaml_matches_the_accounts_the_stack_creates(cloud, prefix):
    auth = yaml.safe_load((ROOT / "clouds.yaml").read_text())["clouds"][cloud]["auth"]
    accounts = stack.env_file("keystone-accounts.env")
    assert auth["username"] == accounts[prefix + "USERNAME"]
    assert auth["password"] == accounts[prefix + "PASSWORD"]
    assert auth["project_name"] == accounts[prefix + "PROJECT_NAME"]


def test_placement_is_in_the_catalog_at_the_front_door(placement_url, admin_headers):
    resp = requests.get(
        f"{stack.keystone_url()}/auth/tokens",
        headers={**admin_headers, "x-subject-token": admin_headers["x-auth-token"]},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    catalog = {entry["type"]: entry for entry in resp.json()["token"]["catalog"]}
    urls = {ep["interface"]: ep["url"] for ep in catalog["placement"]["endpoints"]}
    assert urls == {"public": placement_url, "internal": "http://haproxy:8778"}
