"""Run inside a running keystone-mode placement replica (docker exec): the
modules a worker imports to validate its first token, and which of them have
no bytecode in the image.

Placement's application, as placedock_wsgi builds it from the replica's own
environment (keystone mode, its database, keystone and memcached), serves
one request carrying the token given as argv[1]. Printed, as JSON: the
status, the modules the request imported, and those whose cached bytecode
(importlib.util.cache_from_source) is missing: each would be compiled in
every worker after the fork, in memory no other worker shares.
"""

import importlib.util
import json
import os
import sys

import placedock_wsgi
import webob

before = set(sys.modules)
request = webob.Request.blank(
    "/resource_providers",
    headers={"x-auth-token": sys.argv[1], "openstack-api-version": "placement latest", "accept": "application/json"},
)
response = request.get_response(placedock_wsgi.application)
imported = sorted(set(sys.modules) - before)
missing = []
for name in imported:
    path = getattr(sys.modules[name], "__file__", None)
    if path and path.endswith(".py") and not os.path.exists(importlib.util.cache_from_source(path)):
        missing.append(name)
print(json.dumps({"status": response.status_int, "imported": imported, "missing": missing}))
