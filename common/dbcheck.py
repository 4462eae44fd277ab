"""Check a service's database URL before anything uses it.

    python3 dbcheck.py [VARIABLE]     default: OS_PLACEMENT_DATABASE__CONNECTION

The keystone image uses it too, with OS_DATABASE__CONNECTION.
Exits 0 once the database answers. Exits 1 with one line naming the variable
when the URL is malformed or names a driver the image lacks, when the server
refuses the credentials or the database, or when the server has not answered
within DB_WAIT_TIMEOUT seconds. While the server is merely not up yet (not
there, refusing connections, starting up) it retries, logging each try.
"""

import os
import re
import sys
import time

import sqlalchemy
from sqlalchemy import exc as sa_exc

PLACEMENT_VAR = "OS_PLACEMENT_DATABASE__CONNECTION"
RETRY_SECONDS = 2
# The URLs this project serves, and each server's default port. The driver is
# named: a bare postgresql:// means psycopg2 to SQLAlchemy 2.0 but psycopg 3
# to 2.1 (placement 16.0.0), and mysql:// means MySQLdb.
DRIVERS = {"mysql+pymysql": 3306, "postgresql+psycopg2": 5432, "sqlite": None}
EXAMPLES = "mysql+pymysql://USER:PASSWORD@HOST/DB, postgresql+psycopg2://USER:PASSWORD@HOST/DB or sqlite:////PATH"
# MySQL server errors that waiting will not fix.
FATAL_MYSQL_ERRORS = {
    1044: "the user may not use that database",
    1045: "the server rejected the user or password",
    1049: "the database does not exist on the server",
}
# PostgreSQL's, which libpq gives as text only (no SQLSTATE before a session
# exists): a pattern of the server's message, and what it means. A role that
# does not exist fails its password: the server does not say which.
FATAL_POSTGRES_ERRORS = {
    r"password authentication failed": "the server rejected the user or password",
    r'database ".*" does not exist': "the database does not exist on the server",
    r'role ".*" does not exist': "the role does not exist on the server",
    r"no pg_hba\.conf entry": "the server lets no such user in from here (pg_hba.conf)",
    r"permission denied for database": "the user may not use that database",
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


def parse_url(var, raw=None):
    """`raw` is the URL when it comes from elsewhere than the variable (etcd);
    `var` then names where, for the messages."""
    raw = (os.environ.get(var, "") if raw is None else raw).strip()
    if not raw:
        fail(f"{var} is not set")
    try:
        url = sqlalchemy.engine.make_url(raw)
    except sa_exc.ArgumentError:
        fail(f"{var} is not a database URL (expected {EXAMPLES})")
    if url.drivername not in DRIVERS:
        fail(f"{var} uses driver {url.drivername!r}: use {EXAMPLES}")
    if url.drivername != "sqlite" and not (url.host and url.database):
        fail(f"{var} needs a host and a database name: {url.drivername}://USER:PASSWORD@HOST/DB")
    return url


def describe(url):
    """Where a URL points, without its password."""
    if url.drivername == "sqlite":
        return url.database
    return f"{url.host}:{url.port or DRIVERS[url.drivername]}/{url.database}"


def refusal(url, exc):
    """Why the server refused for good, or None if waiting may help."""
    driver = exc.orig
    if url.drivername == "postgresql+psycopg2":
        text = str(driver)
        return next((why for pattern, why in FATAL_POSTGRES_ERRORS.items() if re.search(pattern, text)), None)
    code = driver.args[0] if driver is not None and driver.args else None
    return FATAL_MYSQL_ERRORS.get(code)


def reason_of(exc):
    """The driver's own words, on one line."""
    driver = exc.orig
    if driver is None or not driver.args:
        return str(exc).splitlines()[0]
    text = str(driver.args[-1]).strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(var=PLACEMENT_VAR, timeout=None, raw=None):
    """Wait for the database named by the URL in `var` (or `raw`, see
    parse_url); `timeout` defaults to DB_WAIT_TIMEOUT. Returns the URL and
    the engine that reached it."""
    url = parse_url(var, raw)
    if timeout is None:
        timeout = wait_timeout()
    where = describe(url)
    connect_args = {} if url.drivername == "sqlite" else {"connect_timeout": 5}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    except ImportError as exc:
        fail(f"{var}: this image has no {url.drivername} driver ({exc})")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            return url, engine
        except sa_exc.OperationalError as exc:
            reason, why = reason_of(exc), refusal(url, exc)
            if why:
                fail(f"{var}: {why} ({where}: {reason})")
            if url.drivername == "sqlite":
                fail(f"{var}: cannot open sqlite database {where}: {reason}")
            if time.monotonic() >= deadline:
                fail(f"{var}: no database at {where} after {timeout:g}s (DB_WAIT_TIMEOUT): {reason}")
            log(f"waiting for database at {where}: {reason}")
            time.sleep(RETRY_SECONDS)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else PLACEMENT_VAR)
