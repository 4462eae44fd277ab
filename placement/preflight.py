"""Placement's start-up checks, run once before uwsgi starts.

1. Every option placement reads parses: a bad value in any OS_<GROUP>__<OPTION>
   variable is named here, not buried in a uwsgi "no app loaded" traceback.
2. Keystone mode: each memcached in OS_KEYSTONE_AUTHTOKEN__MEMCACHED_SERVERS
   answers (without it keystonemiddleware validates every token at keystone).
3. The database answers (dbcheck.py), at the URL placement will use: from
   OS_PLACEMENT_DATABASE__CONNECTION, or from etcd (placedock_etcd.py).

Waiting (2, 3) is bounded by DB_WAIT_TIMEOUT and logged; anything waiting will
not fix exits 1 with one line naming the variable.
"""

import os
import socket
import time

import dbcheck
import placedock_etcd
from keystoneauth1 import loading as ks_loading
from keystonemiddleware.auth_token import _opts as authtoken_opts
from oslo_config import cfg
from placement import conf
from placement import wsgi as placement_wsgi


def check_options():
    """The options as placement will read them; a value that does not parse stops the start."""
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
                read(config, option, name)
    return config


def where(config, name, group):
    """What set an option, for the messages: its variable, or its etcd key."""
    try:
        detail = config.get_location(name, None if group == "DEFAULT" else group).detail or ""
    except (cfg.NoSuchOptError, ValueError):
        detail = ""
    return f"etcd key {detail[5:]}" if detail.startswith("etcd:") else placedock_etcd.env_name(group, name)


def read(config, name, group):
    """An option's value; a value that does not parse stops the start."""
    try:
        return config[name] if group == "DEFAULT" else config[group][name]
    except (cfg.ConfigFileValueError, cfg.ConfigSourceValueError, ValueError) as exc:
        reason = str(exc).rpartition("is not valid: ")[2]
        dbcheck.fail(f"{where(config, name, group)}: not a valid value: {reason}")


def check_keystone(config):
    """Keystone mode: the service user's settings, wherever they come from
    (the environment, or etcd). Its auth plugin's options are registered
    here, as keystonemiddleware does when it loads the plugin."""
    plugin = config.keystone_authtoken.auth_type or "password"
    for opt in ks_loading.get_auth_plugin_conf_options(plugin):
        if opt.dest not in config.keystone_authtoken:
            config.register_opt(opt, "keystone_authtoken")
    for option in ("auth_url", "password"):
        if not read(config, option, "keystone_authtoken"):
            dbcheck.fail(
                f"{placedock_etcd.env_name('keystone_authtoken', option)} is not set (nor in etcd): "
                "OS_API__AUTH_STRATEGY=keystone needs it"
            )


def database(config):
    """(the URL, where it was set) when etcd may have set it; (None, variable) otherwise."""
    if not placedock_etcd.enabled():
        return None, dbcheck.PLACEMENT_VAR
    label = where(config, "connection", "placement_database")
    return config.placement_database.connection or "", label


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
    config = check_options()
    if os.environ.get("OS_API__AUTH_STRATEGY") == "keystone":
        check_keystone(config)
        check_memcached(timeout)
    raw, label = database(config)
    dbcheck.main(label, timeout=timeout, raw=raw)


if __name__ == "__main__":
    main()
