"""Wait until the placement database has this image's schema.

    python3 schemawait.py

On Kubernetes (kubernetes/base) the Job placement-db-sync runs the
migrations once, and every placement pod runs this as its init container, so
that no replica serves before the schema is there and N replicas never race
on the migrations (compose orders the same with depends_on).

Exits 0 once the database's alembic revision is the head of the installed
placement's migrations, or a revision this image does not know: a newer
release migrated it, and placement's migrations only ever add, so the older
code still runs on it (a rolling upgrade). While the database does not answer,
or has no revision or an older one, it waits and logs each try; after
DB_WAIT_TIMEOUT seconds it exits 1 with one line (the pod then restarts it).
"""

import os
import time

import dbcheck
import placedock_etcd
import preflight
from alembic import migration as alembic_migration
from alembic import script as alembic_script
from alembic.util import CommandError
from placement.db.sqlalchemy import migration as placement_migration
from sqlalchemy import exc as sa_exc

VAR = dbcheck.PLACEMENT_VAR


def scripts():
    """The migrations of the installed placement."""
    location = os.path.join(os.path.dirname(placement_migration.__file__), "alembic")
    return alembic_script.ScriptDirectory(location)


def current_revision(engine):
    with engine.connect() as conn:
        return alembic_migration.MigrationContext.configure(conn).get_current_revision()


def known(directory, revision):
    try:
        return directory.get_revision(revision) is not None
    except CommandError:
        return False


def main():
    timeout = dbcheck.wait_timeout()
    deadline = time.monotonic() + timeout
    raw, label = (None, VAR)
    if placedock_etcd.enabled():  # the URL is etcd's
        raw, label = preflight.database(preflight.check_options())
    url, engine = dbcheck.main(label, timeout, raw)
    directory = scripts()
    head = directory.get_current_head()
    while True:
        try:
            revision = current_revision(engine)
        except sa_exc.OperationalError as exc:
            revision, why = None, f"database not answering ({exc.orig or exc})"
        else:
            why = f"revision {revision}" if revision else "no schema yet"
        if revision == head:
            dbcheck.log(f"schema at {head}: ready")
            return
        if revision and not known(directory, revision):
            dbcheck.log(f"schema at {revision}, newer than this image's {head}: ready (migrations only add)")
            return
        if time.monotonic() >= deadline:
            dbcheck.fail(
                f"{VAR}: {dbcheck.describe(url)}: {why}, want {head}, after {timeout:g}s (DB_WAIT_TIMEOUT):"
                " has the placement-db-sync Job run?"
            )
        dbcheck.log(f"waiting for the schema at {dbcheck.describe(url)}: {why}, want {head}")
        time.sleep(dbcheck.RETRY_SECONDS)


if __name__ == "__main__":
    main()
