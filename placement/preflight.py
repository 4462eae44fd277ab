"""Placement's start-up checks, run once before uwsgi starts.

1. Every option placement reads parses: a bad value in any OS_<GROUP>__<OPTION>
   variable is named here, not buried in a uwsgi "no app loaded" traceback.
2. Keystone mode: each memcached in OS_KEYSTONE_AUTHTOKEN__MEMCACHED_SERVERS
   answers (without it keystonemiddleware validates every token at keystone).
3. The database answers (dbcheck.py).

Waiting (2, 3) is bounded by DB_WAIT_TIMEOUT and logged; anything waiting will
not fix exits 1 with one line naming the variable.
"""

import os
import socket
import time

import dbcheck
from keystonemiddleware.auth_token import _opts as authtoken_opts
from oslo_config import cfg
from placement import conf
from placement import wsgi as placement_wsgi


def env_name(group, option):
    return f"OS_{group.upper()}__{option.upper().replace('-', '_')}"


def check_options():
    config = cfg.ConfigOpts()
    conf.register_opts(config)
    for group, opts in authtoken_opts.list_opts():
        config.register_opts(opts, group)
    try:
        config([], project="placement", default_config_files=placement_wsgi._get_config_files())
    except cfg.Error as exc:
        dbcheck.fail(f"placement configuration: {exc}")
    for name in list(config):
        value = read(config, name, "DEFAULT")
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            for option in list(value):
                read(value, option, name)


def read(options, name, group):
    """An option's value; a value that does not parse stops the start."""
    try:
        return options[name]
    except (cfg.ConfigFileValueError, ValueError) as exc:
        reason = str(exc).rpartition("is not valid: ")[2]
        dbcheck.fail(f"{env_name(group, name)}: not a valid value: {reason}")


def check_memcached(timeout):
    var = "OS_KEYSTONE_AUTHTOKEN__MEMCACHED_SERVERS"
    servers = [s.strip() for s in os.environ.get(var, "").split(",") if s.strip()]
    deadline = time.monotonic() + timeout
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            dbcheck.fail(f"{var}: {server!r} is not HOST:PORT")
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    dbcheck.fail(f"{var}: no memcached at {server} after {timeout:g}s (DB_WAIT_TIMEOUT): {exc}")
                dbcheck.log(f"waiting for memcached at {server}: {exc}")
                time.sleep(dbcheck.RETRY_SECONDS)


def main():
    timeout = dbcheck.wait_timeout()
    check_options()
    if os.environ.get("OS_API__AUTH_STRATEGY") == "keystone":
        check_memcached(timeout)
    dbcheck.main(timeout=timeout)


if __name__ == "__main__":
    main()
