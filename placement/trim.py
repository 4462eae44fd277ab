"""Trim the image's Python to what placement uses: run in the image's root.

    python3 trim.py VENV [STDLIB]

Python compiles each module it imports into __pycache__ once, at install
time here, and a module without its .pyc still imports: it is compiled in
memory instead. So this keeps the .pyc of every module placement imports
when it starts, migrates and serves (found by doing it, below, against a
scratch sqlite database) and deletes the others, about a third of the
venv's bytes. A module outside that set (placement-status, a rarely taken
code path) still works, at the cost of compiling it when it is first
imported. Every .py file stays, so tracebacks show their source lines.

STDLIB, the standard library, comes without bytecode (placement/Dockerfile
copies Debian's files, not what Debian compiles when it installs them): the
run below writes the .pyc of what it imports, the rest is left without.

netaddr's IEEE registries (oui.txt, iab.txt and their indexes, 9 MB) go too:
they answer "which vendor owns this MAC address", which placement never asks.

One line says what it removed.
"""

import netrc  # noqa: F401 - requests imports it on keystone mode's first validation, which exercise() makes none of
import os
import sys
import tempfile
import urllib.request  # noqa: F401 - what the healthcheck, run every few seconds, imports
from pathlib import Path

NETADDR_REGISTRIES = ("oui.txt", "oui.idx", "iab.txt", "iab.idx")


def exercise():
    """Start, migrate and serve as a replica does; the module files imported."""
    scratch = tempfile.mkdtemp()
    os.environ.update(
        OS_API__AUTH_STRATEGY="noauth2",
        OS_PLACEMENT_DATABASE__CONNECTION=f"sqlite:///{scratch}/trim.sqlite",
    )
    # placement-manage db sync (DB_SYNC=True), in this process.
    from placement.cmd import manage

    sys.argv = ["placement-manage", "db", "sync"]
    try:
        manage.main()
    except SystemExit as done:  # what it ends with, success too
        if done.code:
            raise

    # The app as uwsgi loads it (preflight checks included), then one request
    # of each kind, and the mariadb and PostgreSQL drivers.
    # keystonemiddleware, memcache and oslo_cache._memcache_pool: keystone
    # mode's token cache, which auth_token imports only on a worker's first
    # validation (tests/test_keystone.py finds every such module in a keystone
    # replica). placedock_etcd, preflight, reloader, schemawait: the image's
    # own scripts (options from etcd, the entrypoint's checks, the reloader).
    import keystonemiddleware.auth_token  # noqa: F401
    import memcache  # noqa: F401
    import oslo_cache._memcache_pool  # noqa: F401
    import placedock_etcd  # noqa: F401
    import placedock_wsgi
    import preflight  # noqa: F401
    import reloader  # noqa: F401
    import schemawait  # noqa: F401
    import sqlalchemy
    import webob

    # Each loads its dialect and driver, and connects to nothing.
    sqlalchemy.create_engine("mysql+pymysql://placement:x@localhost/placement")
    sqlalchemy.create_engine("postgresql+psycopg2://placement:x@localhost/placement")
    headers = {"x-auth-token": "admin", "openstack-api-version": "placement latest"}
    requests = [
        ("GET", "/", None, 200),
        ("POST", "/resource_providers", {"name": "trim"}, 200),
        ("GET", "/resource_providers?name=trim", None, 200),
        ("GET", "/traits?name=startswith:HW_CPU", None, 200),
        ("GET", "/resource_classes", None, 200),
        ("GET", "/allocation_candidates?resources=VCPU:1&required=HW_CPU_X86_AVX2", None, 200),
        ("GET", "/usages?project_id=trim", None, 200),
        ("GET", "/no-such-path", None, 404),
    ]
    for method, path, body, status in requests:
        request = webob.Request.blank(path, method=method, headers=headers)
        if body is not None:
            request.content_type = "application/json"
            request.json = body
        response = request.get_response(placedock_wsgi.application)
        if response.status_code != status:
            sys.exit(f"trim: {method} {path} answered {response.status}, not {status}: {response.text[:300]}")
    return {os.path.realpath(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None)}


def unused_bytecode(root, imported):
    """The .pyc files under root whose module was not imported."""
    for pyc in Path(root).rglob("__pycache__/*.pyc"):
        source = pyc.parent.parent / (pyc.name.split(".", 1)[0] + ".py")
        if os.path.realpath(source) not in imported:
            yield pyc


def main(venv, *more):
    imported = exercise()
    removed = [pyc for root in (venv, *more) for pyc in unused_bytecode(root, imported)]
    removed += [p for p in Path(venv).rglob("netaddr/eui/*") if p.name in NETADDR_REGISTRIES]
    size = sum(p.stat().st_size for p in removed)
    for path in removed:
        path.unlink()
    kept = sum(1 for root in (venv, *more) for _ in Path(root).rglob("__pycache__/*.pyc"))
    print(f"trim: removed {len(removed)} files, {size / 1e6:.1f} MB; kept the .pyc of {kept} imported modules")


if __name__ == "__main__":
    main(*sys.argv[1:])
