"""Shared fixtures: the front door, and control of the test stack's compose project."""

import os
import uuid

import pytest
import requests
from placedock.stack import compose as stack


def pytest_configure(config):
    """Keystone mode run by hand against a kept stack: fetch the tokens here."""
    if os.environ.get("PLACEDOCK_AUTH_MODE") == "keystone" and not os.environ.get("PLACEMENT_TOKEN"):
        os.environ.update(stack.keystone_tokens())


@pytest.fixture(scope="session")
def placement_url():
    return os.environ.get("PLACEMENT_URL", stack.placement_url())


@pytest.fixture(scope="session")
def auth_mode():
    return os.environ.get("PLACEDOCK_AUTH_MODE", "noauth")


@pytest.fixture(scope="session")
def admin_headers():
    token = os.environ.get("PLACEMENT_TOKEN", "admin")
    return {"x-auth-token": token, "openstack-api-version": "placement latest"}


@pytest.fixture(scope="session")
def database():
    return os.environ.get("PLACEDOCK_DATABASE", "mariadb")


@pytest.fixture(scope="session")
def compose_stack(auth_mode, database):
    return stack.Stack(auth_mode, database=database)


@pytest.fixture
def provider(placement_url, admin_headers):
    """A resource provider with a unique name, deleted afterwards."""
    name = f"test-stack-{uuid.uuid4().hex[:12]}"
    resp = requests.post(f"{placement_url}/resource_providers", json={"name": name}, headers=admin_headers, timeout=10)
    resp.raise_for_status()
    body = resp.json()
    yield body
    requests.delete(f"{placement_url}/resource_providers/{body['uuid']}", headers=admin_headers, timeout=10)
