"""Register placement in keystone the way a deployment does; safe to run again.

Creates what is missing and corrects what drifted (passwords, endpoint URLs):
- project `service`, the service user (OS_KEYSTONE_AUTHTOKEN__USERNAME /
  __PASSWORD, the very variables placement authenticates with) with roles
  `service` and `admin` on that project;
- a non-admin user (PLACEDOCK_MEMBER_*) with role `member` on its project;
- the `placement` service and its public and internal endpoints.

A user's password is set only when the user is new or the configured password
no longer authenticates: setting it revokes all of that user's tokens.

Authenticates as the bootstrap admin (OS_BOOTSTRAP_*, as keystone-manage
bootstrap used them) against OS_AUTH_URL.
"""

import os
import sys
import time

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client

DOMAIN = "default"


def env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        print(f"keystone-register: {name} is not set", file=sys.stderr)
        sys.exit(1)
    return value


def log(message):
    print(f"keystone-register: {message}", file=sys.stderr, flush=True)


def find(manager, name, **filters):
    found = [item for item in manager.list(name=name, **filters) if item.name == name]
    return found[0] if found else None


def ensure(manager, name, create=None, **filters):
    item = find(manager, name, **filters)
    if item is None:
        item = (create or (lambda: manager.create(name=name, **filters)))()
        log(f"created {manager.resource_class.__name__.lower()} {name}")
    return item


def authenticates(name, password):
    """Whether keystone takes `password` for user `name`: False on its 401 only."""
    auth = v3.Password(auth_url=env("OS_AUTH_URL"), username=name, password=password, user_domain_id=DOMAIN)
    try:
        session.Session(auth=auth, timeout=10).get_token()
    except ks_exc.Unauthorized:
        return False
    return True


def ensure_user(ks, name, password, project):
    user = find(ks.users, name, domain=DOMAIN)
    if user is None:
        user = ks.users.create(name=name, password=password, domain=DOMAIN, default_project=project)
        log(f"created user {name}")
    elif not authenticates(name, password):
        # Only then: keystone revokes every token of a user whose password is
        # set, and this runs on every `up` (keystone-manage bootstrap does the
        # same for the admin).
        ks.users.update(user, password=password)
        log(f"set the password of user {name}: the configured one did not authenticate")
    return user


def grant(ks, role_name, user, project):
    role = ensure(ks.roles, role_name)
    ks.roles.grant(role, user=user, project=project)


def ensure_endpoint(ks, service, interface, url, region):
    existing = [ep for ep in ks.endpoints.list(service=service, interface=interface) if ep.region_id == region]
    if not existing:
        ks.endpoints.create(service=service, interface=interface, url=url, region=region)
        log(f"created {interface} endpoint {url}")
    elif existing[0].url != url:
        ks.endpoints.update(existing[0], url=url)
        log(f"moved {interface} endpoint to {url}")


def connect():
    auth = v3.Password(
        auth_url=env("OS_AUTH_URL"),
        username=env("OS_BOOTSTRAP_USERNAME"),
        password=env("OS_BOOTSTRAP_PASSWORD"),
        project_name=env("OS_BOOTSTRAP_PROJECT_NAME"),
        user_domain_id=DOMAIN,
        project_domain_id=DOMAIN,
    )
    ks = client.Client(session=session.Session(auth=auth, timeout=10), interface="internal")
    # keystone is healthy before this runs; this covers a slow first token.
    for attempt in range(10):
        try:
            ks.projects.list()
            return ks
        except (ks_exc.ConnectFailure, ks_exc.ServiceUnavailable) as exc:
            log(f"keystone not answering yet ({exc}), try {attempt + 1} of 10")
            time.sleep(2)
    log(f"keystone at {env('OS_AUTH_URL')} did not answer")
    sys.exit(1)


def main():
    region = env("OS_BOOTSTRAP_REGION_ID")
    ks = connect()

    service_project = ensure(ks.projects, env("OS_KEYSTONE_AUTHTOKEN__PROJECT_NAME"), domain=DOMAIN)
    service_user = ensure_user(
        ks, env("OS_KEYSTONE_AUTHTOKEN__USERNAME"), env("OS_KEYSTONE_AUTHTOKEN__PASSWORD"), service_project
    )
    for role in ("service", "admin"):
        grant(ks, role, service_user, service_project)

    member_project = ensure(ks.projects, env("PLACEDOCK_MEMBER_PROJECT_NAME"), domain=DOMAIN)
    member_user = ensure_user(ks, env("PLACEDOCK_MEMBER_USERNAME"), env("PLACEDOCK_MEMBER_PASSWORD"), member_project)
    grant(ks, "member", member_user, member_project)

    service = find(ks.services, "placement")
    if service is None:
        service = ks.services.create(name="placement", type="placement", description="OpenStack Placement")
        log("created service placement")
    ensure_endpoint(ks, service, "public", env("PLACEMENT_PUBLIC_URL"), region)
    ensure_endpoint(ks, service, "internal", env("PLACEMENT_INTERNAL_URL"), region)
    log("placement registered")


if __name__ == "__main__":
    main()
