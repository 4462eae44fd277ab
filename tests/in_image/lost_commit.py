"""Run inside the placement image: a write for a new consumer whose commit
happened but whose answer was lost, and what placement keeps of it.

Placement's own application, as placedock_wsgi builds it, on a new sqlite
database (noauth2). replace_all (every allocation write goes through it)
commits in a transaction of its own, then raises the lost connection a commit
in flight raises when its connection is closed. Printed, as JSON: for PUT and
POST /allocations, the write's status, the allocations then listed for the
consumer and for the provider, and the provider's usages.
"""

import json
import subprocess
import uuid

subprocess.run(["placement-manage", "db", "sync"], check=True, capture_output=True)

import placedock_wsgi  # noqa: E402  (after the database exists: its checks read it)
import webob  # noqa: E402
from oslo_db import exception as db_exc  # noqa: E402
from placement import db_api  # noqa: E402
from placement.objects import allocation as alloc_obj  # noqa: E402

HEADERS = {
    "x-auth-token": "admin",
    "openstack-api-version": "placement 1.39",
    "content-type": "application/json",
    "accept": "application/json",
}
replace_all = alloc_obj.replace_all


def committed_then_lost(ctx, allocations):
    @db_api.placement_context_manager.writer.independent
    def commit(ctx):
        replace_all(ctx, allocations)

    commit(ctx)
    raise db_exc.DBConnectionError("lost connection to the database during COMMIT")


def call(method, path, body=None):
    request = webob.Request.blank(path, method=method, headers=HEADERS)
    if body is not None:
        request.body = json.dumps(body).encode()
    response = request.get_response(placedock_wsgi.application)
    return response.status_int, (response.json if response.body else None)


def lost_write(method, rp):
    consumer = str(uuid.uuid4())
    owner = {"project_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "consumer_type": "INSTANCE"}
    if method == "PUT":
        path, body = f"/allocations/{consumer}", {"allocations": {rp: {"resources": {"VCPU": 2}}}, **owner}
        body["consumer_generation"] = None
    else:
        body = {consumer: {"allocations": {rp: {"resources": {"VCPU": 2}}}, "consumer_generation": None, **owner}}
        path = "/allocations"
    alloc_obj.replace_all = committed_then_lost
    try:
        status, _ = call(method, path, body)
    finally:
        alloc_obj.replace_all = replace_all
    return {
        "status": status,
        "consumer": call("GET", f"/allocations/{consumer}")[1]["allocations"],
        "provider": call("GET", f"/resource_providers/{rp}/allocations")[1]["allocations"],
        "usages": call("GET", f"/resource_providers/{rp}/usages")[1]["usages"],
    }


def main():
    found = {}
    for method in ("PUT", "POST"):
        rp = str(uuid.uuid4())
        assert call("POST", "/resource_providers", {"name": f"lost-{method}", "uuid": rp})[0] == 200
        inventory = {"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 8}}}
        assert call("PUT", f"/resource_providers/{rp}/inventories", inventory)[0] == 200
        found[method] = lost_write(method, rp)
    print(json.dumps(found))


main()
