"""The committed clouds.yaml drives the real openstack CLI (osc-placement) in
either auth mode: create a provider, set its inventory, list it; on the test
stack's ports, through the one line clouds.yaml says to export for them."""

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from placedock.stack import compose as stack

ROOT = Path(__file__).resolve().parent.parent
CLOUDS = {"noauth": "placedock", "keystone": "placedock-keystone"}


def port_line(cloud):
    """The `export OS_...=...` line clouds.yaml's header gives for a stack of
    `cloud` on other ports."""
    found = [
        line.split("#")[1].strip()
        for line in (ROOT / "clouds.yaml").read_text().splitlines()
        if re.match(r"#\s+export OS_\w+=\S+\s+#", line)
        and cloud in [name.strip() for name in line.split("#")[2].split(",")]
    ]
    assert len(found) == 1, f"clouds.yaml says {len(found)} times how to reach {cloud} on other ports"
    return found[0]


def cli_environment():
    """The caller's environment without OS_*, with the test stack's ports."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OS_")}
    return {**env, **stack.ports()}


@pytest.mark.parametrize(
    "cloud, variable, url",
    [
        ("placedock", "OS_ENDPOINT", stack.placement_url),
        ("placedock-keystone", "OS_AUTH_URL", lambda: f"http://127.0.0.1:{stack.ports()['KEYSTONE_PORT']}/v3"),
        ("placedock-keystone-demo", "OS_AUTH_URL", lambda: f"http://127.0.0.1:{stack.ports()['KEYSTONE_PORT']}/v3"),
    ],
)
def test_clouds_yaml_says_how_to_reach_a_stack_on_other_ports(cloud, variable, url):
    line = port_line(cloud)
    done = subprocess.run(
        ["sh", "-c", f'{line}; echo "${variable}"'], env=cli_environment(), capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == url()


@pytest.fixture
def openstack(auth_mode):
    """Run `openstack --os-cloud <mode's cloud> ...` from the repo root, where
    the CLI finds clouds.yaml, after the line clouds.yaml gives for other ports."""
    cloud = CLOUDS[auth_mode]
    cli = str(Path(sys.executable).parent / "openstack")

    def run(*args, parse=True):
        cmd = [cli, "--os-cloud", cloud, "--os-placement-api-version", "1.39", *args]
        if parse:
            cmd += ["-f", "json"]
        cmd = ["sh", "-c", f'{port_line(cloud)}; exec "$@"', "sh", *cmd]
        done = subprocess.run(cmd, cwd=ROOT, env=cli_environment(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout) if parse else done.stdout

    return run


def test_create_provider_set_inventory_and_list_it(openstack):
    name = f"cli-{uuid.uuid4().hex[:12]}"
    provider = openstack("resource", "provider", "create", name)
    try:
        openstack(
            "resource", "provider", "inventory", "set", provider["uuid"],
            "--resource", "VCPU=16", "--resource", "MEMORY_MB=8192",
        )  # fmt: skip
        inventory = {
            row["resource_class"]: row
            for row in openstack("resource", "provider", "inventory", "list", provider["uuid"])
        }
        assert inventory["VCPU"]["total"] == 16
        assert inventory["MEMORY_MB"]["total"] == 8192
        listed = openstack("resource", "provider", "list", "--name", name)
        assert [row["uuid"] for row in listed] == [provider["uuid"]]
    finally:
        openstack("resource", "provider", "delete", provider["uuid"], parse=False)
