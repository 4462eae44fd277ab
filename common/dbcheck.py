"""Check a service's database URL before anything uses it.

    python3 dbcheck.py [VARIABLE]     default: OS_PLACEMENT_DATABASE__CONNECTION

The keystone image uses it too, with OS_DATABASE__CONNECTION.
Exits 0 once the database answers. Exits 1 with one line naming the variable
when the URL is malformed, when the server refuses the credentials or the
database, or when the server has not answered within DB_WAIT_TIMEOUT seconds.
While the server is merely not up yet it retries, logging each try.
"""

import os
import sys
import time

import sqlalchemy
from sqlalchemy import exc as sa_exc

PLACEMENT_VAR = "OS_PLACEMENT_DATABASE__CONNECTION"
RETRY_SECONDS = 2
# MySQL server errors that waiting will not fix.
FATAL_MYSQL_ERRORS = {
    1044: "the user may not use that database",
    1045: "the server rejected the user or password",
    1049: "the database does not exist on the server",
}


def log(message):
    print(f"placedock: {message}", file=sys.stderr, flush=True)


def fail(message):
    """Stop with one line. os._exit, not sys.exit: inside uwsgi (see
    placedock_wsgi.py) nothing may print a traceback after this line."""
    log(message)
    sys.stdout.flush()
    os._exit(1)


def wait_timeout():
    raw = os.environ.get("DB_WAIT_TIMEOUT", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if value < 0:
        fail(f"DB_WAIT_TIMEOUT={raw!r} is not a number of seconds")
    return value


def parse_url(var):
    raw = os.environ.get(var, "").strip()
    if not raw:
        fail(f"{var} is not set")
    try:
        url = sqlalchemy.engine.make_url(raw)
    except sa_exc.ArgumentError:
        fail(f"{var} is not a database URL (expected mysql+pymysql://USER:PASSWORD@HOST/DB or sqlite:////PATH)")
    if url.drivername not in ("mysql+pymysql", "sqlite"):
        fail(f"{var} uses driver {url.drivername!r}: use mysql+pymysql:// or sqlite://")
    if url.drivername == "mysql+pymysql" and not (url.host and url.database):
        fail(f"{var} needs a host and a database name: mysql+pymysql://USER:PASSWORD@HOST/DB")
    return url


def describe(url):
    """Where a URL points, without its password."""
    return url.database if url.drivername == "sqlite" else f"{url.host}:{url.port or 3306}/{url.database}"


def main(var=PLACEMENT_VAR, timeout=None):
    """Wait for the database named by the URL in `var`; `timeout` defaults to DB_WAIT_TIMEOUT.
    Returns the URL and the engine that reached it."""
    url = parse_url(var)
    if timeout is None:
        timeout = wait_timeout()
    where = describe(url)
    connect_args = {"connect_timeout": 5} if url.drivername.startswith("mysql") else {}
    engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            return url, engine
        except sa_exc.OperationalError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            reason = exc.orig.args[-1] if exc.orig is not None and exc.orig.args else str(exc)
            if code in FATAL_MYSQL_ERRORS:
                fail(f"{var}: {FATAL_MYSQL_ERRORS[code]} ({where}: {reason})")
            if url.drivername == "sqlite":
                fail(f"{var}: cannot open sqlite database {where}: {reason}")
            if time.monotonic() >= deadline:
                fail(f"{var}: no database at {where} after {timeout:g}s (DB_WAIT_TIMEOUT): {reason}")
            log(f"waiting for database at {where}: {reason}")
            time.sleep(RETRY_SECONDS)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else PLACEMENT_VAR)
