"""While the database or keystone cannot be reached, placement answers 503, not 500.

Placement turns every exception it did not expect into a 500
(placement.fault_wrap). A database that is down, restarting or failing over
is not a bug in placement, and the request is worth trying again: clients get
503 Service Unavailable with Retry-After, in placement's JSON error format,
and one log line instead of a traceback. Every other exception still reaches
placement's own handler. The pool reconnects by itself once the database is
back: nothing needs restarting.

A read that lost its connection is tried once more, on a new one, before it
gets the 503: when the Galera front door moves the connections to another node
(haproxy/galera.cfg closes the old node's sessions), the query in flight on a
closed one then succeeds on the next node instead of failing. A write is never
tried twice: its commit may have happened, so the client is told to retry.

A write whose answer was lost may have been committed all the same. For a new
consumer, placement then deletes the consumer it made for the write, even
though its allocations may now be in the database: they are counted in the
provider's usages but listed nowhere, and no one can delete them
(placement.handlers.allocation.delete_consumers, 13.0.1 to 16.0.0; seen when
the Galera front door moved the connections in a PUT's commit).
keep_allocated_consumers() makes that clean-up delete only a consumer that has
no allocation, with placement's own delete_consumers_if_no_allocations.

Keystone: keystonemiddleware answers 503 itself when keystone refuses
connections, but a keystone that accepts them and then does not answer (hung,
paused, overloaded) ends in a timeout it does not catch. uwsgi then closes the
connection without a response and haproxy, seeing no answer, tries the same
request on every other replica, each waiting as long again. identity_guard()
turns that into the same JSON 503 with Retry-After, at once: haproxy passes a
503 on and retries nothing.

install() must run before placement builds its application, and the
application placement built goes through identity_guard() (placedock_wsgi.py).
"""

import json
import logging
import time

from keystoneauth1 import exceptions as ksa_exc
from oslo_db import exception as db_exc
from placement import fault_wrap, util
from placement.handlers import allocation
from placement.objects import consumer as consumer_obj
from sqlalchemy import exc as sa_exc

LOG = logging.getLogger("placedock.outage")

# Seconds a client should wait: about what the Galera front door needs to
# move to the next node (haproxy/galera.cfg).
RETRY_AFTER = 2
# MariaDB errors that oslo.db does not call a lost connection: the server is
# shutting down. (A Galera node not ready for clients, 1047, is one.)
UNAVAILABLE_CODES = {1053}
# PostgreSQL's (SQLSTATE): connection exceptions (class 08), too many
# connections, and the server shutting down, crashed or not yet accepting
# sessions. oslo.db knows a failed connect only by libpq's words before
# PostgreSQL 14 ("could not connect to server"), so with libpq 15 a server
# that is stopped or gone comes as a plain DBError: a psycopg2
# OperationalError with no SQLSTATE, as libpq gives none before a session.
UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")
# Reads that may be tried again; and the pause before that one more try.
IDEMPOTENT = {"GET", "HEAD"}
RETRY_PAUSE = 0.25


def database_unavailable(exc):
    """Whether exc means "no database now" rather than a bug or a bad request."""
    # A connection that failed or was lost; no pooled connection free in time.
    if isinstance(exc, (db_exc.DBConnectionError, sa_exc.TimeoutError)):
        return True
    inner = getattr(exc, "inner_exception", exc)  # oslo.db's DBError wraps SQLAlchemy's
    driver = getattr(inner, "orig", None)  # which wraps the driver's (PyMySQL, psycopg2)
    if type(driver).__module__.startswith("psycopg2"):
        sqlstate = driver.pgcode
        if sqlstate is None:
            return type(driver).__name__ == "OperationalError"
        return sqlstate.startswith(UNAVAILABLE_SQLSTATES)
    code = driver.args[0] if driver is not None and driver.args else None
    return code in UNAVAILABLE_CODES


class DatabaseOutage:
    """WSGI middleware: database_unavailable() exceptions become a 503."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        try:
            return self.application(environ, start_response)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # Only a lost connection: a pool that had no connection free for
            # pool_timeout would only make the client wait that long again.
            if isinstance(exc, db_exc.DBConnectionError) and environ.get("REQUEST_METHOD") in IDEMPOTENT:
                # Placement answers only once a handler has finished, so nothing
                # has been sent yet and a GET has no body to read again.
                LOG.info("database connection lost (%s): trying %s once more", type(exc).__name__, environ["PATH_INFO"])
                time.sleep(RETRY_PAUSE)
                try:
                    return self.application(environ, start_response)
                except Exception as again:
                    if not database_unavailable(again):
                        raise
                    exc = again
            return self.unavailable(exc, environ, start_response)

    @staticmethod
    def unavailable(exc, environ, start_response):
        LOG.warning("database unavailable: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:300])
        return service_unavailable(
            f"The database cannot be reached now ({type(exc).__name__})", environ, start_response
        )


def json_error(status, title, detail, environ, start_response, headers=()):
    """An error in placement's JSON error format, answered here."""
    body = json.dumps(util.json_error_formatter(detail, status, title, environ)).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
    return [body]


def service_unavailable(why, environ, start_response):
    """A 503 with Retry-After in placement's JSON error format."""
    return json_error(
        "503 Service Unavailable",
        "Service Unavailable",
        f"{why}; try again shortly.",
        environ,
        start_response,
        [("Retry-After", str(RETRY_AFTER))],
    )


def identity_guard(application):
    """The whole application (keystonemiddleware included), with a keystone
    connection that failed or timed out answered by a 503, not an exception."""

    def guarded(environ, start_response):
        try:
            return application(environ, start_response)
        except ksa_exc.ConnectionError as exc:  # ConnectTimeout, ConnectFailure, SSLError, ...
            LOG.warning("keystone unavailable: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:300])
            return service_unavailable(
                f"Keystone cannot be reached now ({type(exc).__name__})", environ, start_response
            )

    return guarded


def delete_unallocated_consumers(consumers):
    """What placement.handlers.allocation.delete_consumers does after a
    failed write, except that a consumer that has allocations is kept."""
    for consumer in consumers:
        try:
            consumer_obj.delete_consumers_if_no_allocations(consumer._context, [consumer.uuid])
        except Exception as err:
            # As placement: the write's error is the one the client gets.
            LOG.warning("could not delete the consumer %s made for a failed write: %s", consumer.uuid, err)


def keep_allocated_consumers():
    """Replace placement's clean-up after a failed write, while it is the
    one that deletes the consumer whatever it holds (Consumer.delete)."""
    if "delete" in allocation.delete_consumers.__code__.co_names:
        allocation.delete_consumers = delete_unallocated_consumers


def inside_fault_handler(middleware):
    """Wrap every placement app built after this in `middleware`, inside
    placement's fault handler (which wraps the handler, behind
    authentication): what the middleware lets through still gets
    placement's own error handling."""
    placement_fault_wrapper = fault_wrap.FaultWrapper

    def fault_wrapper(application):
        return placement_fault_wrapper(middleware(application))

    fault_wrap.FaultWrapper = fault_wrapper


def install():
    """Put DatabaseOutage inside placement's fault handler, for every app built
    after; and keep the consumers that a failed write's commit gave allocations."""
    keep_allocated_consumers()
    inside_fault_handler(DatabaseOutage)
