"""Keystone mode beyond the gabbits: token validation is cached in memcached,
tokens survive the README's rescale (keystone-register runs again on every
`up`), and the committed clouds.yaml agrees with the accounts the stack creates."""

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from keystoneauth1 import exceptions as ks_exc
from placedock.stack import compose as stack

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


def keystone_validates(token):
    """keystone's answer to validating `token`: 200, or 404 once it is revoked."""
    resp = requests.get(
        f"{stack.keystone_url()}/auth/tokens",
        headers={"x-auth-token": stack.admin_token(), "x-subject-token": token},
        timeout=10,
    )
    return resp


def account_tokens():
    """New tokens of the member and of placement's service user (not yet seen
    by placement, so not in its token cache), and the member's project id."""
    tokens = {name: value for name, value in stack.keystone_tokens().items() if name != "PLACEMENT_TOKEN"}
    member = keystone_validates(tokens["PLACEMENT_MEMBER_TOKEN"])
    assert member.status_code == 200, member.text
    return tokens, member.json()["token"]["project"]["id"]


def through_placement(url, token):
    """placement's answer to a GET with `token`, once it is not a 503."""
    answers = []

    def answered():
        headers = {"openstack-api-version": "placement latest", "x-auth-token": token}
        answers.append(requests.get(url, headers=headers, timeout=10))
        return answers[-1].status_code != 503

    stack.wait_until(answered, timeout=60, step=1, what=f"an answer other than 503 from {url}")
    return answers[-1]


def readme_rescale(compose_stack, replicas):
    """The README's rescale, exactly: it re-runs keystone-init and keystone-register."""
    compose_stack.compose("up", "-d", "--wait", "--scale", f"placement={replicas}")


def test_tokens_issued_before_the_readme_rescale_still_validate_after_it(compose_stack, placement_url):
    tokens, member_project = account_tokens()
    assert keystone_validates(tokens["PLACEMENT_SERVICE_TOKEN"]).status_code == 200
    try:
        readme_rescale(compose_stack, 5)
        stack.wait_for_up(5)
        after = {name: keystone_validates(token).status_code for name, token in tokens.items()}
        assert after == {"PLACEMENT_MEMBER_TOKEN": 200, "PLACEMENT_SERVICE_TOKEN": 200}
        # Placement validates them at keystone now (their first use there):
        # 200, not 401. A 503 (keystone slow to answer a new replica on a busy
        # host) says nothing either way: ask again.
        member = through_placement(
            f"{placement_url}/usages?project_id={member_project}", tokens["PLACEMENT_MEMBER_TOKEN"]
        )
        assert member.status_code == 200, member.text
        service = through_placement(f"{placement_url}/resource_providers", tokens["PLACEMENT_SERVICE_TOKEN"])
        assert service.status_code == 200, service.text
    finally:
        readme_rescale(compose_stack, 3)
        stack.wait_for_up(3)


def test_keystone_register_puts_back_a_drifted_password_and_no_other(compose_stack):
    accounts = stack.env_file("keystone-accounts.env")
    name, password, project = (accounts[f"PLACEDOCK_MEMBER_{key}"] for key in ("USERNAME", "PASSWORD", "PROJECT_NAME"))
    tokens, _ = account_tokens()
    admin = {"x-auth-token": stack.admin_token()}
    resp = requests.get(f"{stack.keystone_url()}/users", params={"name": name}, headers=admin, timeout=10)
    (user,) = resp.json()["users"]
    drifted = {"user": {"password": f"drifted-{uuid.uuid4().hex}"}}
    resp = requests.patch(f"{stack.keystone_url()}/users/{user['id']}", json=drifted, headers=admin, timeout=10)
    assert resp.status_code == 200, resp.text
    with pytest.raises(ks_exc.Unauthorized):
        stack.keystone_token(name, password, project)
    readme_rescale(compose_stack, 3)
    stack.wait_for_up(3)
    # The configured password is back; the service user, whose password did
    # not drift, was left alone: its token is not revoked.
    assert stack.keystone_token(name, password, project)
    service = keystone_validates(tokens["PLACEMENT_SERVICE_TOKEN"])
    assert service.status_code == 200, service.text


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


FIRST_VALIDATION = ROOT / "tests" / "in_image" / "first_validation.py"


def test_a_workers_first_validation_imports_nothing_without_its_bytecode(compose_stack):
    """placement/trim.py keeps only the bytecode of the modules placement imports; those
    keystonemiddleware loads on its first validation are among them, or every worker
    compiles them after the fork (unshared memory, a slower first request)."""
    replica = compose_stack.container_ids("placement")[0]
    out = stack.docker(
        "exec", "-e", "PYTHONPATH=/usr/local/lib/placedock", replica,
        "python3", "-c", FIRST_VALIDATION.read_text(), stack.admin_token(),  # a new token: in no cache yet
    )  # fmt: skip
    found = json.loads(out.splitlines()[-1])
    assert found["status"] == 200, found
    assert found["imported"], "the first validation imported nothing: the probe did not validate"
    assert found["missing"] == [], f"imported without bytecode: {found['missing']}"
