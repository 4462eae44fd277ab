"""What a uwsgi worker pays once, on its first request after the fork, in
each auth mode.

For each mode a fresh stack (one replica) is brought up, and then, one at a
time, fresh one-off replicas of one worker each (UWSGI_PROCESSES=1, the
stack's threads; not in haproxy's DNS). Once a replica answers its version
document (what its healthcheck asks), it is sent `calls` requests one after
the other, each on a new connection: GET /resource_providers?name=… (a name no provider has) with
the mode's token. The first is its worker's first authenticated request;
the median of the others (the second left out: a thread of its own may still
be warming) its steady state.

In keystone mode the token is validated once through the front door first,
so memcached holds it: the one-off replica's first request pays its own
worker's start (keystonemiddleware's memcached client, its first
connection to the database), not keystone's validation of a new token.
"""

import time

import requests

from placedock.api.client import wait_ready
from placedock.stack.compose import admin_token, container_ip, remove

MODES = ("noauth", "keystone")
QUERY = "/resource_providers?name=placedock-first-request"


def headers(token):
    return {"x-auth-token": token, "openstack-api-version": "placement latest", "connection": "close"}


def get(url, token):
    """Seconds one GET took on a new connection; a status other than 200 stops the run."""
    t0 = time.perf_counter()
    resp = requests.get(url + QUERY, headers=headers(token), timeout=30)
    seconds = time.perf_counter() - t0
    if resp.status_code != 200:
        raise RuntimeError(f"first requests: GET {url}{QUERY} answered {resp.status_code}: {resp.text[:200]}")
    return seconds


def token(stack, mode):
    """The mode's token; keystone's validated through the front door, so memcached holds it."""
    if mode == "noauth":
        return "admin"
    value = admin_token(stack.keystone_url)
    get(stack.placement_url, value)
    return value


def one_replica(stack, value, calls, timeout):
    """The seconds of `calls` requests to a fresh one-worker replica, in order."""
    name = stack.run_detached("placement", env={"UWSGI_PROCESSES": "1"})
    try:
        url = f"http://{container_ip(name)}:8778"
        wait_ready(url, timeout)
        return [get(url, value) for _ in range(calls)]
    finally:
        remove(name)


def measure(make_stack, bring_up, calls, replicas, timeout, log):
    """{mode: {"runs": [[seconds of each request] per replica]}}; make_stack(mode) is
    the bench's project in that mode, bring_up(stack) its fresh start."""
    out = {}
    for mode in MODES:
        stack = make_stack(mode)
        try:
            bring_up(stack)
            value = token(stack, mode)
            log(f"first requests: {mode}, {replicas} fresh one-worker replicas, {calls} requests each")
            out[mode] = {"runs": [one_replica(stack, value, calls, timeout) for _ in range(replicas)]}
        finally:
            stack.down()
    return out
