"""The WSGI module uwsgi loads: placedock's preflight checks, then placement.

Running the checks here, in the uwsgi master before it forks, rather than in a
process of their own, means placement's modules are imported once per start:
a new replica comes into rotation about a second sooner. A failed check ends
the process with its one line (see preflight.py).

When placement itself does not import (a tree under development with a syntax
error, see reloader.py), one line says where and why before uwsgi prints the
whole traceback and exits.

Last, the objects made so far are frozen out of the garbage collector's
sight, so that the workers uwsgi forks keep sharing them (see the end).

A standby uwsgi of reloader.py (PLACEDOCK_STANDBY_FD) first imports what
placement imports from its pinned dependencies, most of a start's time, then
waits for the reloader's go before it touches placement's own code, which may
change until then, and before it reads its options (the go names the etcd
revision to read them at); end-of-file instead of a go means it is not needed.
"""

import gc
import importlib
import json
import os
import sys
import traceback

# Placement's heaviest imports from its dependencies (python -X importtime).
WARM = (
    "sqlalchemy.orm",
    "alembic.runtime.migration",
    "keystonemiddleware.auth_token",
    "oslo_db.sqlalchemy.enginefacade",
    "oslo_policy.policy",
    "oslo_log.log",
    "oslo_middleware",
    "webob.dec",
    "routes",
    "jsonschema",
    "pymysql",
    "os_traits",
    "os_resource_classes",
    "microversion_parse",
)

STOPPING_ERROR = {"status": 404, "title": "Not Found", "detail": "This replica is stopping.", "code": "placedock.stop"}
STOPPING = json.dumps({"errors": [STOPPING_ERROR]}).encode()


def stop_aware(app, flag):
    """haproxy's health checks (they carry X-Placedock-Check) answered 404
    once the entrypoint has been told to stop and made `flag`: haproxy then
    sends this replica no new request (http-check disable-on-404). Every
    other request is served as usual until the server itself stops."""

    def check_or_app(environ, start_response):
        if "HTTP_X_PLACEDOCK_CHECK" in environ and os.path.exists(flag):
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [STOPPING]
        return app(environ, start_response)

    return check_or_app


standby = os.environ.pop("PLACEDOCK_STANDBY_FD", None)
if standby is not None:
    for name in WARM:
        importlib.import_module(name)
    # Said once per standby: a change saved from now on is served in well
    # under a second (tests/test_src.py waits for it before its first edit).
    print("placedock: standby uwsgi warm: the next change reloads quickly", file=sys.stderr, flush=True)
    go = os.read(int(standby), 4096)
    if not go:
        os._exit(0)
    os.close(int(standby))
    # "go", then any variables to set first: the etcd revision to read.
    os.environ.update(json.loads(go[2:]) if go[2:] else {})

try:
    import preflight

    preflight.main()

    import outage
    import query_guard
    import usage_by_type

    outage.install()
    query_guard.install()
    usage_by_type.install()

    from placement.wsgi import api  # after the checks, on purpose

    application = outage.identity_guard(api.application)
    if os.environ.get("PLACEDOCK_STOPPING"):
        application = stop_aware(application, os.environ["PLACEDOCK_STOPPING"])
except Exception as exc:
    if isinstance(exc, SyntaxError):
        where, reason = f"{exc.filename}:{exc.lineno}", exc.msg
    else:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where, reason = f"{frame.filename}:{frame.lineno}", exc
    print(f"placedock: placement does not load: {where}: {type(exc).__name__}: {reason}", file=sys.stderr, flush=True)
    raise

# uwsgi forks the workers from this process once this module has loaded
# (lazy-apps = false), and they share its pages until one writes to them. The
# cyclic garbage collector would: each collection writes to every object it
# scans, so every page of the loaded app ends up copied into every worker.
# Frozen objects are never scanned again (the workers' own still are).
gc.collect()
gc.freeze()
