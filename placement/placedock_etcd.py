"""Placement's dynamic options from etcd: an oslo.config source driver, the
keys' reader and writer, and the rolling reload's lock and records.

The driver is registered under oslo.config's own extension point (the
`oslo.config.driver` entry point `placedock-etcd`, placement/Dockerfile), so
placement reads etcd the way it reads its files and its environment:

    OS_DEFAULT__CONFIG_SOURCE=etcd  OS_ETCD__DRIVER=placedock-etcd
    OS_ETCD__ENDPOINTS=http://etcd:2379  OS_ETCD__PREFIX=/placedock/placement

An option's key is PREFIX/GROUP/OPTION, e.g.
/placedock/placement/placement_database/connection. oslo.config's order
holds: command line, then the environment, then files, then etcd. So an
explicit OS_<GROUP>__<OPTION> still wins, except for the options etcd
governs (PLACEDOCK_ETCD_OPTIONS): for those the environment only gives the
first value (`seed`, run by the entrypoint), and the variable is then unset.

A process reads the whole prefix once, at one revision (OS_ETCD__REVISION,
which the reloader pins; the latest otherwise), and keeps the values:
oslo.config caches a source's values, and placement configures its
database once per process. A change takes a new uwsgi: placement/reloader.py
watches the prefix and reloads one replica at a time across the stack, under
a lock in etcd. Each successful read is kept in the container (CACHE): a
replica that starts again while etcd does not answer serves that last-known-
good copy; a new container with no copy fails with one line.

    placedock-etcd seed                      (the entrypoint) seed, print the variables to unset
    placedock-etcd set GROUP.OPTION=VALUE... one transaction; VALUE "-" reads stdin
    placedock-etcd unset GROUP.OPTION...
    placedock-etcd get GROUP.OPTION
    placedock-etcd list                      secrets masked
    placedock-etcd status [--json]           the replicas, the revision each serves, the lock
    placedock-etcd history [--json]          the rolling-reload lock's holders

etcd is spoken to through its JSON gateway (/v3, etcd 3.4): six calls, no
client library to pin across placement's releases.
"""

import argparse
import base64
import hashlib
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

from oslo_config import cfg, sources

GROUP = "etcd"
DEFAULT_PREFIX = "/placedock/placement"
CACHE = "/var/lib/placement/etcd-config.json"
# The options etcd governs: the dynamic ones of the original placedock's
# README (database connection strings and authtoken settings).
GOVERNED = "placement_database.connection keystone_authtoken.username keystone_authtoken.password"
# Not settable in etcd: they say where configuration comes from.
REFUSED = {("DEFAULT", "config_source"), (GROUP, "driver")}
LEASE_TTL = 10  # seconds: a replica gone without a word leaves the lock this long after

OPTS = [
    cfg.ListOpt("endpoints", default=["http://etcd:2379"], help="etcd client URLs, tried in turn."),
    cfg.StrOpt("prefix", default=DEFAULT_PREFIX, help="Keys are PREFIX/GROUP/OPTION."),
    cfg.IntOpt("revision", min=1, help="Read at this store revision (the reloader sets it); the latest if unset."),
    cfg.StrOpt("cache", default=CACHE, help="The last-known-good copy of the values, kept in the container."),
    cfg.FloatOpt("timeout", default=5.0, min=0.1, help="Seconds per call to etcd."),
]


class Unavailable(Exception):
    """No endpoint answered."""


def b64(text):
    return base64.b64encode(text.encode()).decode()


def unb64(text):
    return base64.b64decode(text or "").decode()


def prefix_end(prefix):
    """The range end that covers every key starting with `prefix`."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def log(message):
    print(f"placedock: {message}", file=sys.stderr, flush=True)


class Etcd:
    """The calls placedock makes to etcd's v3 JSON gateway."""

    def __init__(self, endpoints, timeout=5.0):
        self.endpoints = [e.strip().rstrip("/") for e in endpoints if e.strip()]
        self.timeout = timeout

    def describe(self):
        return ",".join(self.endpoints)

    def call(self, path, body, timeout=None):
        """POST to each endpoint in turn until one answers; the last answering
        one goes first next time. An error etcd states (a gRPC code) is raised
        as RuntimeError, not retried elsewhere."""
        data = json.dumps(body).encode()
        failures = []
        for endpoint in list(self.endpoints):
            request = urllib.request.Request(f"{endpoint}{path}", data=data, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                    answer = json.load(response)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")
                try:
                    detail = json.loads(detail).get("error", detail)
                except ValueError:
                    pass
                if exc.code >= 500 and "etcdserver" not in detail:
                    failures.append(f"{endpoint}: {exc.code} {detail}")
                    continue
                raise RuntimeError(f"etcd at {endpoint}: {detail}") from None
            except (OSError, ValueError) as exc:
                failures.append(f"{endpoint}: {getattr(exc, 'reason', exc)}")
                continue
            if endpoint != self.endpoints[0]:
                self.endpoints.remove(endpoint)
                self.endpoints.insert(0, endpoint)
            return answer
        raise Unavailable("; ".join(failures))

    def range(self, key, prefix=False, revision=None, sort_create=False, limit=0):
        """(store revision, [kv]) with each kv's key and value decoded."""
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        if revision:
            body["revision"] = str(revision)
        if sort_create:
            body.update(sort_order="ASCEND", sort_target="CREATE")
        if limit:
            body["limit"] = str(limit)
        answer = self.call("/v3/kv/range", body)
        kvs = []
        for kv in answer.get("kvs", []):
            kvs.append(
                {
                    "key": unb64(kv["key"]),
                    "value": unb64(kv.get("value")),
                    "create_revision": int(kv.get("create_revision", 0)),
                    "mod_revision": int(kv.get("mod_revision", 0)),
                    "lease": int(kv.get("lease", 0)),
                }
            )
        return int(answer["header"]["revision"]), kvs

    def get(self, key):
        return next(iter(self.range(key)[1]), None)

    def put(self, key, value, lease=None):
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def delete(self, key):
        return int(self.call("/v3/kv/deleterange", {"key": b64(key)})["header"]["revision"])

    def txn(self, compare, success, failure=()):
        """(succeeded, store revision)."""
        answer = self.call("/v3/kv/txn", {"compare": compare, "success": list(success), "failure": list(failure)})
        return bool(answer.get("succeeded")), int(answer["header"]["revision"])

    @staticmethod
    def op_put(key, value, lease=None):
        request = {"key": b64(key), "value": b64(value)}
        if lease:
            request["lease"] = str(lease)
        return {"request_put": request}

    @staticmethod
    def op_delete(key):
        return {"request_delete_range": {"key": b64(key)}}

    @staticmethod
    def absent(key):
        return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}

    def create(self, key, value, lease=None):
        """Put `key` if it does not exist: (created, store revision)."""
        return self.txn([self.absent(key)], [self.op_put(key, value, lease)])

    def grant(self, ttl):
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease):
        """The lease's remaining TTL; 0 if etcd no longer has it."""
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke(self, lease):
        self.call("/v3/lease/revoke", {"ID": str(lease)})

    def watch(self, key, start_revision, idle=30.0):
        """Yield (revision, [key]) for each change under the prefix `key` from
        `start_revision` on. Ends (returns) after `idle` seconds with no
        message, so that a vanished member is noticed; raises Unavailable
        when the connection cannot be made or breaks."""
        body = {
            "create_request": {
                "key": b64(key),
                "range_end": prefix_end(key),
                "start_revision": str(start_revision),
                "progress_notify": True,
            }
        }
        failures = []
        for endpoint in list(self.endpoints):
            request = urllib.request.Request(f"{endpoint}/v3/watch", data=json.dumps(body).encode(), method="POST")
            try:
                response = urllib.request.urlopen(request, timeout=idle)  # noqa: SIM115 - closed below
            except (OSError, ValueError) as exc:
                failures.append(f"{endpoint}: {getattr(exc, 'reason', exc)}")
                continue
            try:
                for line in response:
                    result = json.loads(line).get("result", {})
                    if result.get("canceled"):
                        compacted = int(result.get("compact_revision", 0))
                        if compacted:  # the revisions wanted are gone: go on from what is left
                            yield compacted, []
                            return
                        raise Unavailable(f"{endpoint}: watch canceled: {result.get('cancel_reason', '')}")
                    events = result.get("events", [])
                    if events:
                        revision = max(int(e["kv"]["mod_revision"]) for e in events)
                        yield revision, [unb64(e["kv"]["key"]) for e in events]
                return
            except TimeoutError:
                return
            except (OSError, ValueError, json.JSONDecodeError) as exc:
                raise Unavailable(f"{endpoint}: the watch broke: {exc}") from None
            finally:
                response.close()
        raise Unavailable("; ".join(failures))


class Config:
    """The values under a prefix at one store revision."""

    def __init__(self, prefix, revision, values, change=0, cached_at=None):
        self.prefix = prefix
        self.revision = revision  # the store revision read at
        self.values = values  # {(group, option): value}
        self.change = change  # the revision of the last change to them (what `status` shows)
        self.cached_at = cached_at  # the time of the copy, when read from the cache

    def __eq__(self, other):
        return isinstance(other, Config) and self.values == other.values

    def digest(self):
        text = json.dumps(sorted([g, o, v] for (g, o), v in self.values.items()))
        return hashlib.sha256(text.encode()).hexdigest()

    def key(self, group, option):
        return f"{self.prefix}/{group}/{option}"

    def changed(self, old):
        names = sorted(
            f"{g}.{o}"
            for g, o in self.values.keys() | old.values.keys()
            if self.values.get((g, o)) != old.values.get((g, o))
        )
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    def to_json(self):
        values = [[g, o, v] for (g, o), v in sorted(self.values.items())]
        return {"prefix": self.prefix, "revision": self.revision, "change": self.change, "values": values}

    @classmethod
    def from_json(cls, data, cached_at=None):
        values = {(g, o): v for g, o, v in data["values"]}
        return cls(data["prefix"], data["revision"], values, data.get("change", 0), cached_at)


def parse_key(prefix, key):
    """(group, option) of a key under the prefix, or None for any other key."""
    rest = key[len(prefix) + 1 :] if key.startswith(prefix + "/") else ""
    group, _, option = rest.partition("/")
    if not group or not option or "/" in option:
        return None
    return group, option


def read(client, prefix, revision=None):
    """The options at one store revision, and the revision of their last
    change: the newest key's, or the change record's (placedock-etcd writes
    it with every change; it alone shows an option removed)."""
    values, change = {}, 0
    store_revision, kvs = client.range(prefix + "/", prefix=True, revision=revision)
    for kv in kvs:
        name = parse_key(prefix, kv["key"])
        if name is not None:
            values[name] = kv["value"]
            change = max(change, kv["mod_revision"])
    _, record = client.range(f"{prefix}.run/changed", revision=revision or store_revision)
    change = max([change] + [kv["mod_revision"] for kv in record])
    return Config(prefix, revision or store_revision, values, change)


def save_cache(path, config):
    try:
        partial = f"{path}.{os.getpid()}"
        with open(partial, "w") as out:
            json.dump(config.to_json(), out)
        os.chmod(partial, 0o600)  # passwords
        os.replace(partial, path)
    except OSError as exc:
        log(f"etcd: cannot keep a last-known-good copy at {path}: {exc}")


def load_cache(path, prefix):
    try:
        with open(path) as cached:
            config = Config.from_json(json.load(cached), cached_at=os.stat(path).st_mtime)
    except (OSError, ValueError, KeyError):
        return None
    return config if config.prefix == prefix else None


def load(client, prefix, revision=None, cache=CACHE):
    """The values at `revision` (the latest if None), kept in `cache`. When etcd
    does not answer: the cached copy, if there is one; else Unavailable."""
    try:
        config = read(client, prefix, revision)
    except Unavailable as exc:
        cached = load_cache(cache, prefix)
        if cached is None:
            raise Unavailable(
                f"etcd at {client.describe()} (OS_ETCD__ENDPOINTS) does not answer, and this container has no "
                f"last-known-good copy of {prefix} ({cache}): {exc}"
            ) from None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cached.cached_at))
        log(
            f"etcd at {client.describe()} does not answer ({exc}): using the last-known-good copy of {prefix} "
            f"(revision {cached.revision}, kept {when})"
        )
        return cached
    save_cache(cache, config)
    return config


class EtcdSource(sources.ConfigurationSource):
    def __init__(self, config):
        self.config = config

    def get(self, group_name, option_name, opt):
        value = self.config.values.get((group_name or "DEFAULT", option_name), sources._NoValue)
        if value is sources._NoValue:
            return sources._NoValue, None
        return value, cfg.LocationInfo(
            cfg.Locations.user, f"etcd:{self.config.key(group_name or 'DEFAULT', option_name)}"
        )


class EtcdDriver(sources.ConfigurationSourceDriver):
    """oslo.config's entry point `placedock-etcd`."""

    def list_options_for_discovery(self):
        return OPTS

    def open_source_from_opt_group(self, conf, group_name):
        conf.register_opts(OPTS, group_name)
        settings = conf[group_name]
        client = Etcd(settings.endpoints, settings.timeout)
        try:
            config = load(client, settings.prefix.rstrip("/"), settings.revision, settings.cache)
        except (Unavailable, RuntimeError) as exc:
            fail(str(exc))
        return EtcdSource(config)


def fail(message):
    """One line and exit 1 (os._exit: inside uwsgi, nothing may follow it)."""
    log(message)
    sys.stdout.flush()
    os._exit(1)


# --- settings of the etcd source, from the environment ------------------------


def env_name(group, option):
    return f"OS_{group.upper()}__{option.upper().replace('-', '_')}"


def source_group():
    """The config_source group whose driver is placedock-etcd, or None."""
    for group in (g.strip() for g in os.environ.get("OS_DEFAULT__CONFIG_SOURCE", "").split(",")):
        if group and os.environ.get(env_name(group, "driver")) == "placedock-etcd":
            return group
    return None


class Settings:
    """The etcd source's settings as the replicas' environment gives them."""

    def __init__(self):
        self.group = source_group() or GROUP
        get = lambda option, default: os.environ.get(env_name(self.group, option)) or default  # noqa: E731
        self.endpoints = [e for e in get("endpoints", "http://etcd:2379").split(",") if e.strip()]
        self.prefix = get("prefix", DEFAULT_PREFIX).rstrip("/")
        if not self.prefix.startswith("/"):
            fail(f"{env_name(self.group, 'prefix')}={self.prefix!r}: a key prefix starts with /, e.g. {DEFAULT_PREFIX}")
        self.cache = get("cache", CACHE)
        try:
            self.timeout = float(get("timeout", "5"))
        except ValueError:
            fail(f"{env_name(self.group, 'timeout')}: not a number of seconds")
        self.governed = []
        for name in os.environ.get("PLACEDOCK_ETCD_OPTIONS", GOVERNED).split():
            group, _, option = name.partition(".")
            if not group or not option:
                fail(f"PLACEDOCK_ETCD_OPTIONS: {name!r} is not GROUP.OPTION")
            self.governed.append((group, option))
        # Runtime records, beside the options and outside the watched prefix.
        self.run = f"{self.prefix}.run"

    def client(self):
        return Etcd(self.endpoints, self.timeout)


def enabled():
    return source_group() is not None


# --- the option registry: what `set` validates against --------------------------


def registry():
    """Every option a replica reads: placement's, keystonemiddleware's, the
    keystone auth plugins' (password, v3password), as a ConfigOpts."""
    from keystoneauth1 import loading as ks_loading
    from keystonemiddleware.auth_token import _opts as authtoken_opts
    from placement import conf

    config = cfg.ConfigOpts()
    conf.register_opts(config)
    for group, opts in authtoken_opts.list_opts():
        config.register_opts(opts, group)
    known = {o.dest for _, opts in authtoken_opts.list_opts() for o in opts}
    for plugin in ("v3password", "password"):
        for opt in ks_loading.get_auth_plugin_conf_options(plugin):
            if opt.dest not in known:
                config.register_opt(opt, "keystone_authtoken")
                known.add(opt.dest)
    return config


def find_opt(config, group, option):
    """The Opt placement has for GROUP.OPTION, or a one-line reason it has none."""
    option = option.replace("-", "_")
    if (group, option) in REFUSED or group == GROUP:
        return None, f"{group}.{option} says where configuration comes from: set it in the environment, not in etcd"
    opts = config._opts if group == "DEFAULT" else (config._groups[group]._opts if group in config._groups else None)
    if opts is None:
        return None, f"placement has no option group [{group}]"
    if option not in opts:
        return None, f"placement has no option {option!r} in [{group}]"
    return opts[option]["opt"], None


def check_value(opt, value):
    try:
        opt.type(value)
    except (ValueError, TypeError) as exc:
        return f"not a valid {type(opt).__name__.removesuffix('Opt') or 'value'}: {exc}"
    return None


# --- commands ------------------------------------------------------------------------


def wait_for_etcd(settings, client):
    """Whether etcd answers. A container with a last-known-good copy does not
    wait (it starts on the copy); one without waits up to DB_WAIT_TIMEOUT
    (etcd starting beside it), then stops with one line."""
    try:
        timeout = float(os.environ.get("DB_WAIT_TIMEOUT", "60"))
    except ValueError:
        fail(f"DB_WAIT_TIMEOUT={os.environ['DB_WAIT_TIMEOUT']!r} is not a number of seconds")
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.range(settings.prefix + "/", limit=1)
            return True
        except Unavailable as exc:
            if load_cache(settings.cache, settings.prefix) is not None:
                log(f"etcd does not answer ({exc}): this container starts on its last-known-good copy")
                return False
            if time.monotonic() >= deadline:
                fail(
                    f"etcd at {client.describe()} (OS_ETCD__ENDPOINTS) does not answer, and this container has no "
                    f"last-known-good copy of {settings.prefix}: cannot start: no answer after {timeout:g}s "
                    f"(DB_WAIT_TIMEOUT): {exc}"
                )
            log(f"waiting for etcd at {client.describe()}: {exc}")
            time.sleep(2)


def seed(settings):
    """For each governed option whose OS_ variable is set: put it in etcd if
    the key is not there yet (the first replica seeds; later ones find it).
    Prints the variables to unset, so that etcd's value is the one read."""
    client = settings.client()
    answering = wait_for_etcd(settings, client)
    unset = []
    for group, option in settings.governed:
        var = env_name(group, option)
        value = os.environ.get(var)
        if value is None:
            continue
        key = f"{settings.prefix}/{group}/{option}"
        created = False
        if answering:
            try:
                created, _ = client.create(key, value)
                if created:
                    client.put(f"{settings.run}/changed", json.dumps({"keys": [key], "by": "seed"}))
            except Unavailable as exc:
                fail(
                    f"etcd at {client.describe()} (OS_ETCD__ENDPOINTS) stopped answering while {var} was seeded: {exc}"
                )
        if created:
            log(f"etcd: {group}.{option}: seeded from {var}")
        else:
            log(f"etcd: {group}.{option}: etcd holds it; {var} is ignored")
        unset.append(var)
    print(" ".join(unset))


def parse_assignment(text):
    name, eq, value = text.partition("=")
    group, dot, option = name.partition(".")
    if not eq or not dot or not group or not option:
        raise SystemExit(f"placedock-etcd: {text!r}: use GROUP.OPTION=VALUE (VALUE - reads it from stdin)")
    return group, option.replace("-", "_"), value


def validate(settings, pairs):
    """Refuse, before anything is written, an option placement does not have,
    a value it would not parse, or one the replicas' environment overrides."""
    config = registry()
    for group, option, value in pairs:
        opt, why = find_opt(config, group, option)
        if why:
            raise SystemExit(f"placedock-etcd: {group}.{option}: {why}")
        if value is not None:
            why = check_value(opt, value)
            if why:
                raise SystemExit(f"placedock-etcd: {group}.{option}: {why}")
        var = env_name(group, option)
        if var in os.environ and (group, option) not in settings.governed:
            raise SystemExit(
                f"placedock-etcd: {group}.{option}: {var} is set in the replicas' environment, and it wins over etcd: "
                "remove it there first (or list the option in PLACEDOCK_ETCD_OPTIONS)"
            )


def write(settings, puts, deletes):
    client = settings.client()
    ops = [client.op_put(f"{settings.prefix}/{g}/{o}", v) for g, o, v in puts]
    ops += [client.op_delete(f"{settings.prefix}/{g}/{o}") for g, o in deletes]
    keys = [f"{g}.{o}" for g, o, _ in puts] + [f"{g}.{o}" for g, o in deletes]
    ops.append(client.op_put(f"{settings.run}/changed", json.dumps({"keys": keys, "at": time.time()})))
    _, revision = client.txn([], ops)
    print(f"revision {revision}: {', '.join(keys)}")


def secret(config, group, option):
    opt, _ = find_opt(config, group, option)
    return opt is not None and getattr(opt, "secret", False)


def replicas(settings, client):
    _, kvs = client.range(f"{settings.run}/replicas/", prefix=True)
    return [json.loads(kv["value"]) for kv in kvs]


def latest_change(settings, client):
    """The revision of the last change to the options."""
    return read(client, settings.prefix).change


def status(settings, as_json):
    client = settings.client()
    latest = latest_change(settings, client)
    rows = sorted(replicas(settings, client), key=lambda r: r["replica"])
    holder = lock_holder(client, settings)
    failed = client.get(f"{settings.run}/failed")
    report = {
        "latest": latest,
        "replicas": rows,
        "lock": holder,
        "failed": json.loads(failed["value"]) if failed else None,
    }
    if as_json:
        print(json.dumps(report))
        return
    print(f"options last changed at revision {latest}")
    print(f"{'REPLICA':<24} {'HOST':<16} {'REVISION':>8}  {'STATE':<9} CURRENT   (REVISION: of the options it loaded)")
    for row in rows:
        current = "yes" if row["revision"] == latest else "no"
        print(f"{row['replica']:<24} {row.get('host', ''):<16} {row['revision']:>8}  {row['state']:<9} {current}")
    print(f"lock: {holder['replica'] if holder else 'free'}")
    if report["failed"]:
        print(f"stopped: revision {report['failed']['revision']} did not load in {report['failed']['replica']}")


def history(settings, as_json):
    client = settings.client()
    _, kvs = client.range(f"{settings.run}/history/", prefix=True)
    rows = [json.loads(kv["value"]) for kv in kvs]
    if as_json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(f"{row['acquired']:>8} - {row.get('released', '…'):>8}  {row['replica']} ({row.get('host', '')})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="placedock-etcd", description="placement's options in etcd")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed")
    put = sub.add_parser("set")
    put.add_argument("assignments", nargs="+", metavar="GROUP.OPTION=VALUE")
    remove = sub.add_parser("unset")
    remove.add_argument("names", nargs="+", metavar="GROUP.OPTION")
    get = sub.add_parser("get")
    get.add_argument("name", metavar="GROUP.OPTION")
    sub.add_parser("list")
    for name in ("status", "history"):
        sub.add_parser(name).add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not enabled():
        if args.command == "seed":
            sys.exit(3)  # the entrypoint: no etcd source, nothing to do
        raise SystemExit(
            "placedock-etcd: no etcd source is configured here: OS_DEFAULT__CONFIG_SOURCE must name a group whose "
            "driver is placedock-etcd (compose.etcd.yaml)"
        )
    settings = Settings()
    try:
        if args.command == "seed":
            seed(settings)
        elif args.command == "set":
            pairs = [parse_assignment(a) for a in args.assignments]
            stdin = [p for p in pairs if p[2] == "-"]
            if len(stdin) > 1:
                raise SystemExit("placedock-etcd: only one VALUE may be - (stdin)")
            pairs = [(g, o, sys.stdin.read().rstrip("\n") if v == "-" else v) for g, o, v in pairs]
            validate(settings, pairs)
            write(settings, pairs, [])
        elif args.command == "unset":
            names = [(n.partition(".")[0], n.partition(".")[2].replace("-", "_")) for n in args.names]
            validate(settings, [(g, o, None) for g, o in names])
            write(settings, [], names)
        elif args.command == "get":
            group, _, option = args.name.partition(".")
            kv = settings.client().get(f"{settings.prefix}/{group}/{option.replace('-', '_')}")
            if kv is None:
                raise SystemExit(f"placedock-etcd: {args.name} is not set in etcd ({settings.prefix})")
            print(kv["value"])
        elif args.command == "list":
            config = registry()
            current = read(settings.client(), settings.prefix)
            print(f"revision {current.revision}")
            for (group, option), value in sorted(current.values.items()):
                shown = "****" if secret(config, group, option) else value
                print(f"{group}.{option}={shown}")
        elif args.command == "status":
            status(settings, args.json)
        elif args.command == "history":
            history(settings, args.json)
    except (Unavailable, RuntimeError) as exc:
        raise SystemExit(
            f"placedock-etcd: etcd at {','.join(settings.endpoints)} (OS_ETCD__ENDPOINTS): {exc}"
        ) from None


# --- the rolling reload's lock and records (placement/reloader.py) ---------------------


def lock_holder(client, settings):
    _, kvs = client.range(f"{settings.run}/lock/", prefix=True, sort_create=True, limit=1)
    return json.loads(kvs[0]["value"]) if kvs else None


class Session:
    """A replica's lease (its lock entry and status key live on it), kept
    alive by a thread; a new one is granted if etcd lost it."""

    def __init__(self, settings, replica=None):
        self.settings = settings
        self.client = settings.client()
        self.replica = replica or socket.gethostname()
        self.host = os.environ.get("PLACEDOCK_NODE", "")
        self.lease = None
        self.status = None  # what this replica last said of itself
        self.lock_key = None  # its entry in the lock's queue
        self.acquired = None  # the store revision at which it got the lock
        self.lost = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.keep, daemon=True)
        self.thread.start()

    def ensure_lease(self):
        if self.lease is None:
            self.lease = self.client.grant(LEASE_TTL)
            if self.status is not None:
                self.client.put(self.status_key(), json.dumps(self.status), lease=self.lease)
        return self.lease

    def keep(self):
        while not self.stop.wait(LEASE_TTL / 3):
            try:
                if self.lease is not None and self.client.keepalive(self.lease) <= 0:
                    log("etcd: this replica's lease expired: its lock entry and status are gone; granting a new one")
                    self.lease = None
                    self.lock_key = None
                    self.lost.set()
                    self.ensure_lease()
            except (Unavailable, RuntimeError):
                pass  # kept trying; etcd's TTL decides

    def status_key(self):
        return f"{self.settings.run}/replicas/{self.replica}"

    def report(self, revision, state, digest=None):
        self.status = {
            "replica": self.replica,
            "host": self.host,
            "revision": revision,
            "state": state,
            "digest": digest,
            "at": time.time(),
        }
        try:
            self.client.put(self.status_key(), json.dumps(self.status), lease=self.ensure_lease())
        except (Unavailable, RuntimeError) as exc:
            log(f"etcd: cannot record this replica's state ({state}, revision {revision}): {exc}")

    def try_lock(self):
        """True once this replica holds the lock: its entry is the oldest in
        the queue (etcd's own recipe). Never blocks."""
        if self.acquired is not None:
            return True
        try:
            if self.lock_key is None:
                key = f"{self.settings.run}/lock/{self.ensure_lease():x}"
                value = json.dumps({"replica": self.replica, "host": self.host})
                self.client.create(key, value, lease=self.lease)
                self.lock_key = key
            revision, kvs = self.client.range(f"{self.settings.run}/lock/", prefix=True, sort_create=True, limit=1)
        except (Unavailable, RuntimeError):
            return False
        if not kvs or kvs[0]["key"] != self.lock_key:
            return False
        self.acquired = revision
        self.record_history()
        return True

    def history_key(self):
        return f"{self.settings.run}/history/{self.acquired:012d}-{self.replica}"

    def record_history(self, released=None):
        entry = {"replica": self.replica, "host": self.host, "acquired": self.acquired}
        if released is not None:
            entry["released"] = released
        try:
            self.client.put(self.history_key(), json.dumps(entry))
        except (Unavailable, RuntimeError) as exc:
            log(f"etcd: cannot record the lock's history: {exc}")

    def unlock(self):
        """Leave the queue (holding the lock or in line)."""
        if self.lock_key is None:
            return
        try:
            released = self.client.delete(self.lock_key)
            if self.acquired is not None:
                self.record_history(released)
        except (Unavailable, RuntimeError) as exc:
            log(f"etcd: cannot let the lock go ({exc}): its lease ends it within {LEASE_TTL}s")
        self.lock_key = None
        self.acquired = None

    def failed_digest(self):
        try:
            kv = self.client.get(f"{self.settings.run}/failed")
        except (Unavailable, RuntimeError):
            return None
        return json.loads(kv["value"])["digest"] if kv else None

    def record_failed(self, config):
        value = json.dumps(
            {"digest": config.digest(), "revision": config.change, "replica": self.replica, "at": time.time()}
        )
        try:
            self.client.put(f"{self.settings.run}/failed", value)
        except (Unavailable, RuntimeError) as exc:
            log(f"etcd: cannot record the failed revision: {exc}")

    def clear_failed(self):
        try:
            self.client.delete(f"{self.settings.run}/failed")
        except (Unavailable, RuntimeError) as exc:
            log(f"etcd: cannot clear the failed record: {exc}")

    def close(self):
        self.stop.set()
        self.unlock()
        if self.lease is not None:
            try:
                self.client.revoke(self.lease)
            except (Unavailable, RuntimeError):
                pass


class Watcher:
    """Follows the prefix with etcd's watch API in a thread: `latest` is the
    revision of the newest change seen. Reconnects (to the next endpoint
    too) when the stream breaks, from the revision after the last seen, so
    no change is missed while etcd is away."""

    def __init__(self, settings, since):
        self.settings = settings
        self.client = settings.client()
        self.seen = since  # changes up to this revision are known
        self.latest = since
        self.down_since = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def answering(self):
        if self.down_since is not None:
            took = time.monotonic() - self.down_since
            log(f"etcd: answering again after {took:.1f}s: watching {self.settings.prefix}")
            self.down_since = None

    def run(self):
        delay = 0.5
        while True:
            try:
                for revision, _keys in self.client.watch(self.settings.prefix + "/", self.seen + 1):
                    self.answering()
                    self.seen = max(self.seen, revision)
                    self.latest = self.seen
                    delay = 0.5
                self.answering()
            except Unavailable as exc:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    where = self.settings.prefix
                    log(f"etcd: the watch on {where} is down ({exc}): serving the values loaded; retrying")
                time.sleep(delay)
                delay = min(delay * 2, 5)


if __name__ == "__main__":
    main()
