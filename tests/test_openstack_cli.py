"""The committed clouds.yaml drives the real openstack CLI (osc-placement) in
either auth mode: create a provider, set its inventory, list it."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import stack

ROOT = Path(__file__).resolve().parent.parent
CLOUDS = {"noauth": "placedock", "keystone": "placedock-keystone"}


@pytest.fixture
def openstack(auth_mode, placement_url):
    """Run `openstack --os-cloud <mode's cloud> ...` from the repo root, where
    the CLI finds clouds.yaml. Only the test stack's ports differ from it."""
    port_override = (
        ["--os-endpoint", placement_url] if auth_mode == "noauth" else ["--os-auth-url", stack.keystone_url()]
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("OS_")}
    cli = str(Path(sys.executable).parent / "openstack")

    def run(*args, parse=True):
        cmd = [cli, "--os-cloud", CLOUDS[auth_mode], *port_override, "--os-placement-api-version", "1.39", *args]
        if parse:
            cmd += ["-f", "json"]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
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
