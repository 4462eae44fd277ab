"""Run a command against a placedock stack that this script brings up and tears down.

    placedock stack run [--mode noauth|keystone] [--database mariadb|galera|postgres] [--scale N] [--extra FILE]
        -- COMMAND...
    placedock stack down [--mode ...] [--database ...] [--extra FILE]

`run` builds the images, brings up the test project (its own compose project
name and its own loopback ports, so a dev stack on 8778 is left alone), waits
until haproxy reports every replica UP, runs COMMAND with PLACEMENT_URL and
friends in its environment, prints `ps` and the logs' last lines if COMMAND
failed and keeps every container's whole log in a file (PLACEDOCK_LOG_DIR;
tox: .tox/<env>/logs), and always ends with `down -v` unless
PLACEDOCK_KEEP_STACK=1.

Tests import this module for the same project settings (see tests/conftest.py);
it is the one place that talks to a compose project and reads Docker and
haproxy for the tests, the faults and the benchmark (placedock bench) alike.
"""

import base64
import csv
import functools
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from placedock.cli import command_parser
from placedock.stack import procmem


def find_root():
    """The placedock checkout the tools work on: PLACEDOCK_ROOT, else the first
    folder up from the working directory holding compose.yaml and placement/
    (as git finds .git), else the checkout this package was installed from
    (tox, `pip install -e tools`)."""
    if os.environ.get("PLACEDOCK_ROOT"):
        return Path(os.environ["PLACEDOCK_ROOT"]).resolve()
    for folder in (Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents):
        if (folder / "compose.yaml").is_file() and (folder / "placement" / "Dockerfile").is_file():
            return folder
    raise SystemExit("placedock: no checkout here (no compose.yaml and placement/ up from here); set PLACEDOCK_ROOT")


ROOT = find_root()
PROJECT = os.environ.get("PLACEDOCK_PROJECT", "placedock-test")
MODES = {
    "noauth": ["compose.yaml"],
    "keystone": ["compose.yaml", "compose.keystone.yaml"],
}
# Placement's database: one mariadb, a Galera cluster behind its own front
# door (the service still called mariadb), or PostgreSQL.
DATABASES = {
    "mariadb": [],
    "galera": ["compose.galera.yaml"],
    "postgres": ["compose.postgres.yaml"],
}
# The service placement's URL names, per database.
DATABASE_SERVICES = {"mariadb": "mariadb", "galera": "mariadb", "postgres": "postgres"}
# Loopback ports of the test project; a dev stack keeps 8778/8404/5000/8405.
TEST_PORTS = {
    "PLACEMENT_PORT": "18778",
    "HAPROXY_STATS_PORT": "18404",
    "KEYSTONE_PORT": "15000",
    "GALERA_STATS_PORT": "18405",
}


def ports():
    return {name: os.environ.get(name, default) for name, default in TEST_PORTS.items()}


def placement_url():
    return f"http://127.0.0.1:{ports()['PLACEMENT_PORT']}"


def stats_url():
    return f"http://127.0.0.1:{ports()['HAPROXY_STATS_PORT']}"


def galera_stats_url():
    """The stats page of the Galera stack's database front door."""
    return f"http://127.0.0.1:{ports()['GALERA_STATS_PORT']}"


def keystone_url():
    """The test stack's keystone, unless KEYSTONE_URL names another (the test swarm's)."""
    return os.environ.get("KEYSTONE_URL") or f"http://127.0.0.1:{ports()['KEYSTONE_PORT']}/v3"


def server_slots():
    """haproxy's server slots for placement (haproxy.cfg's server-template
    count): the most replicas that can be sent a request. haproxy has no
    parser to ask; the config is read line by line, never with a pattern."""
    path = ROOT / "haproxy" / "haproxy.cfg"
    for line in path.read_text().splitlines():
        words = line.split()
        if words[:2] == ["server-template", "placement-"]:
            return int(words[2])
    raise ValueError(f"{path}: no server-template placement- line")


def placement_release():
    """The openstack-placement release compose builds and runs: PLACEMENT_VERSION
    from the shell or .env, else compose.yaml's default."""
    return compose_model()["services"]["placement"]["build"]["args"]["PLACEMENT_VERSION"]


def image(name, release=None):
    """The tag compose gives our image NAME (placement, mariadb, ...). The
    placement image is tagged with its release instead of PLACEDOCK_TAG."""
    prefix = os.environ.get("PLACEDOCK_IMAGE_PREFIX", "placedock")
    if name == "placement":
        return f"{prefix}/placement:{release or placement_release()}"
    return f"{prefix}/{name}:{os.environ.get('PLACEDOCK_TAG', 'dev')}"


@functools.cache
def compose_model():
    """compose.yaml as compose resolves it: the shell's variables, else the
    checkout's .env, else the file's defaults."""
    out = subprocess.run(
        [*compose_command(), "-f", str(ROOT / "compose.yaml"), "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def build_settings():
    """(base image, CA bundle) that compose builds with (compose_model: where
    tools/make-base-image's .env counts). What builds outside compose
    (placedock swarm's registry image) asks here, so that it builds on the
    same base."""
    config = compose_model()
    host_ca = config.get("secrets", {}).get("host_ca", {}).get("file", "/dev/null")
    return config["services"]["placement"]["build"]["args"]["BASE_IMAGE"], host_ca


def docker(*args, input=None):
    """Run a docker command (INPUT on its stdin); its output, stripped."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, input=input).stdout.strip()


def container_logs(container, since=None):
    """A container's whole log, stdout and stderr together (uwsgi and mariadb
    log to stderr); with `since` (docker's --since), only from then."""
    flags = ["--since", since] if since else []
    done = subprocess.run(["docker", "logs", *flags, container], capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def container_env(container):
    """A container's environment, as {NAME: value}."""
    env = json.loads(docker("inspect", "-f", "{{json .Config.Env}}", container))
    return dict(item.split("=", 1) for item in env if "=" in item)


def image_size(image):
    """An image's size in bytes, as `docker images` counts it."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", image))


def image_layer_ids(image):
    """The diff IDs of an image's layers, oldest first: two images built FROM the
    same base start with the same ones, and store those bytes once."""
    return json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image))


def image_files(image):
    """{path: bytes} of every regular file in an image, read from `docker export`
    of a container created (never started) from it: no tool inside it runs."""
    container = docker("create", image)
    try:
        with subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE) as export:
            with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
                files = {"/" + m.name.removeprefix("./").lstrip("/"): m.size for m in tar if m.isfile()}
        if export.returncode:
            raise subprocess.CalledProcessError(export.returncode, ["docker", "export", container])
        return files
    finally:
        remove(container)


def remove(container):
    """A container gone, and its anonymous volumes with it (the mariadb image declares one)."""
    subprocess.run(["docker", "rm", "-f", "-v", container], check=False, capture_output=True)


def uwsgi_memory(container):
    """Every uwsgi process of a placement container: role, threads, RSS, PSS and USS in KiB."""
    probe = Path(procmem.__file__).read_text()
    return json.loads(docker("exec", container, "python3", "-c", probe))


def container_memory(container):
    """Every process of a container, read on the host: {"processes": n, "rss_kib": sum, "pss_kib": sum}."""
    pids = [int(p) for p in docker("top", container, "-eo", "pid").split()[1:]]
    rows = [row for row in (procmem.process_memory(pid, "") for pid in pids) if row]
    return {
        "processes": len(rows),
        "rss_kib": sum(r["rss_kib"] for r in rows),
        "pss_kib": sum(r["pss_kib"] for r in rows),
    }


def container_name(container):
    return docker("inspect", "-f", "{{.Name}}", container).lstrip("/")


def container_ip(container):
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container)


def started_at(container):
    """When a container last started, and how often docker restarted it: equal
    before and after means it was not restarted in between."""
    return docker("inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}", container)


def container_health(container):
    """A running container's health (healthy, unhealthy, starting), else its state (exited, ...)."""
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", container],
        capture_output=True,
        text=True,
    ).stdout.split()
    if not out:
        return "missing"
    return out[1] if out[0] == "running" and len(out) > 1 else out[0]


# The oldest Compose v2 every mode runs with (docs/install.md, "Compose v2";
# tests/test_compose_minimum.py runs it). 2.18.1, the release before it on
# PyPI, reads compose.galera.yaml's `!reset` as a plain null: its database
# front door keeps mariadb's build (context "null"), env and volume.
COMPOSE_MINIMUM = (2, 20, 1)


@functools.cache
def compose_command():
    """`docker compose`, once it is known to be Compose v2 >= COMPOSE_MINIMUM."""
    wanted = ".".join(map(str, COMPOSE_MINIMUM))
    done = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"stack: `docker compose` (Compose v2, {wanted} or newer) is not installed: see tools/install-compose")
    version = done.stdout.strip().lstrip("v")
    parsed = tuple(int(part) for part in version.split("-")[0].split(".")[:3] if part.isdigit())
    if parsed < COMPOSE_MINIMUM:
        sys.exit(f"stack: Compose {version} is too old: {wanted} or newer is needed (tools/install-compose)")
    return ["docker", "compose"]


class Stack:
    """One compose project: the test stack in a given auth mode and with a
    given database, plus any compose files in `extra` (e.g. compose.src.yaml)
    merged over it."""

    def __init__(self, mode="noauth", project=PROJECT, extra=(), database="mariadb", quiet=False, **env):
        self.mode = mode
        self.database = database
        self.project = project
        self.base = [*compose_command()]
        for name in (*MODES[mode], *DATABASES[database], *extra):
            self.base += ["-f", str(ROOT / name)]
        self.base += ["-p", project]
        # The stack's uwsgi settings are its own: none from the caller's shell.
        caller = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
        self.env = {**caller, **ports(), **{k: str(v) for k, v in env.items()}}
        # quiet: compose's own output is kept, not printed (the benchmark's log).
        self.quiet = quiet

    @classmethod
    def running(cls, project):
        """The Stack of a compose project that is up, with the compose files it
        was brought up with (its containers' labels say which), so that a
        change made through it is made as `up` made the project."""
        out = docker(
            "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
            "--format", '{{.Label "com.docker.compose.project.config_files"}}',
        )  # fmt: skip
        files = {line for line in out.splitlines() if line}
        if not files:
            raise LookupError(f"no compose project {project} is up (docker compose ls lists those that are)")
        if len(files) > 1:
            raise LookupError(f"compose project {project} was brought up with different files: {sorted(files)}")
        paths = files.pop().split(",")
        names = [Path(path).name for path in paths]
        mode = "keystone" if "compose.keystone.yaml" in names else "noauth"
        database = next((db for db, extra in DATABASES.items() if extra and extra[0] in names), "mariadb")
        found = cls(mode, project=project, database=database)
        found.base = [*compose_command(), *(flag for path in paths for flag in ("-f", path)), "-p", project]
        return found

    @property
    def placement_url(self):
        return f"http://127.0.0.1:{self.env['PLACEMENT_PORT']}"

    @property
    def database_service(self):
        """The service placement's database URL names."""
        return DATABASE_SERVICES[self.database]

    @property
    def stats_url(self):
        return f"http://127.0.0.1:{self.env['HAPROXY_STATS_PORT']}"

    @property
    def keystone_url(self):
        return f"http://127.0.0.1:{self.env['KEYSTONE_PORT']}/v3"

    def compose(self, *args, check=True, capture=False, timeout=600):
        return subprocess.run(
            [*self.base, *args],
            cwd=ROOT,
            env=self.env,
            check=check,
            text=True,
            capture_output=capture or self.quiet,
            timeout=timeout,
        )

    def container_ids(self, service=None, all_states=False):
        """IDs of a service's containers; of the whole project without one."""
        out = self.compose(
            "ps", *(["-a"] if all_states else []), "-q", *([service] if service else []), capture=True
        ).stdout
        return out.split()

    def services(self):
        """The services that have a running container, as compose lists them."""
        return self.compose("ps", "--services", capture=True).stdout.split()

    def haproxy_api(self, command):
        """One command to haproxy's runtime API (its admin socket); the answer."""
        (proxy,) = self.container_ids("haproxy")
        return subprocess.run(
            ["docker", "exec", "-i", proxy, "socat", "stdio", "/tmp/haproxy.sock"],  # noqa: S108 - in the container
            input=command + "\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def logs(self, *services):
        return self.compose("logs", "--no-color", *services, capture=True).stdout

    def scale(self, replicas):
        """Scale placement only: no dependency is touched or recreated."""
        self.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", f"placement={replicas}", "placement")

    def build(self):
        # A cold build (a new base image: every layer, uwsgi compiled, PyPI
        # downloads) on a busy 2-core machine takes over 10 minutes.
        self.compose("build", "-q", timeout=1800)

    def up(self, replicas, build=True, wait=True):
        """Up; with `wait`, back once every service is healthy (one-shots: exited 0)."""
        build_flag = ["--build"] if build else []
        wait_flags = ["--wait", "--wait-timeout", "180"] if wait else []
        self.compose("up", "-d", *wait_flags, *build_flag, "--scale", f"placement={replicas}")

    def down(self):
        self.compose("down", "-v", "--remove-orphans", check=False, timeout=300)

    def run_detached(self, service, *command, env=None):
        """A one-off container of `service` (not in haproxy's DNS); its name."""
        flags = [f"-e{k}={v}" for k, v in (env or {}).items()]
        out = self.compose("run", "-d", "--no-deps", *flags, service, *command, capture=True).stdout
        return out.strip().splitlines()[-1]

    def image_names(self):
        """Every image the project's services use, once each."""
        names = []
        for line in self.compose("config", capture=True).stdout.splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "image" and value not in names:
                names.append(value)
        return names

    def dump(self):
        """What a failure leaves to read: `ps -a`, each service's last lines,
        and every container's whole log kept in a file."""
        self.compose("ps", "-a", check=False)
        self.compose("logs", "--no-color", "--tail=50", check=False)
        where = keep_logs(self.project, self.container_ids(all_states=True))
        print(f"stack: every container's whole log is kept in {where}", flush=True)


def log_dir(name):
    """A new directory NAME-YYYYmmdd-HHMMSS for a failed run's logs, under
    PLACEDOCK_LOG_DIR (tox: .tox/<env>/logs), else under the system's
    temporary directory."""
    base = Path(os.environ.get("PLACEDOCK_LOG_DIR") or Path(tempfile.gettempdir()) / "placedock-logs")
    where = base / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    where.mkdir(parents=True, exist_ok=True)
    return where


def keep_logs(project, containers):
    """Each container's whole log (with docker's timestamps) in a file of its
    own, in a new directory under PLACEDOCK_LOG_DIR (tox: .tox/<env>/logs),
    else under the system's temporary directory; that directory."""
    where = log_dir(project)
    for container in containers:
        done = subprocess.run(["docker", "logs", "--timestamps", container], capture_output=True, text=True)
        try:
            name = container_name(container)
        except subprocess.CalledProcessError:  # gone meanwhile
            name = container
        (where / f"{name}.log").write_text(done.stdout + done.stderr)
    return where


def wait_until(condition, timeout, step=0.05, what="the condition"):
    """Seconds until condition() held; a TimeoutError naming `what` after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(step)
    return time.monotonic() - started


def haproxy_rows(proxy="placement", url=None):
    """A proxy's rows of haproxy's CSV stats (its servers, FRONTEND, BACKEND),
    one dict each: the placement backend of the front door by default. A URL
    with user:password@ asks with them (the stats of a swarm's haproxy)."""
    parts = urllib.parse.urlsplit(url or stats_url())
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    request = urllib.request.Request(parts._replace(netloc=netloc).geturl() + "/stats;csv")
    if parts.username:
        userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(userinfo.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as resp:
        text = resp.read().decode().lstrip("# ")
    return [row for row in csv.DictReader(io.StringIO(text)) if row["pxname"] == proxy]


def haproxy_stats(proxy="placement", url=None):
    """A proxy's server rows of haproxy's CSV stats, one dict per server."""
    return [row for row in haproxy_rows(proxy, url) if row["svname"] not in ("FRONTEND", "BACKEND")]


def haproxy_retries(proxy="placement", url=None):
    """How often the proxy has sent a request again (retried, or redispatched
    to another server) since it started."""
    (backend,) = [row for row in haproxy_rows(proxy, url) if row["svname"] == "BACKEND"]
    return int(backend["wretr"] or 0) + int(backend["wredis"] or 0)


def haproxy_servers(url=None):
    """{server name: status} of the placement backend."""
    return {row["svname"]: row["status"] for row in haproxy_stats(url=url)}


def up_servers(url=None):
    return sorted(name for name, status in haproxy_servers(url).items() if status == "UP")


def wait_for_up(count, timeout=60.0, url=None, poll=0.2):
    """Wait until haproxy has exactly `count` replicas UP; return the seconds it took."""
    start = time.monotonic()
    seen = None
    while time.monotonic() - start < timeout:
        try:
            seen = up_servers(url)
        except OSError as exc:
            seen = f"stats not answering: {exc}"
        if isinstance(seen, list) and len(seen) == count:
            return time.monotonic() - start
        time.sleep(poll)
    raise TimeoutError(f"haproxy did not report {count} UP replicas within {timeout:g}s (last: {seen})")


def settings_file(path):
    """The KEY=VALUE settings of the file at PATH, as compose reads env files."""
    values = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def env_file(name):
    """The KEY=VALUE settings of env/NAME."""
    return settings_file(ROOT / "env" / name)


def accounts(name):
    """env/NAME's settings, with the values of PLACEDOCK_CREDENTIALS over
    them: a file of VARIABLE=value lines, as `placedock swarm secrets` records
    the passwords it made (the test swarm's)."""
    values = env_file(name)
    if os.environ.get("PLACEDOCK_CREDENTIALS"):
        made = settings_file(os.environ["PLACEDOCK_CREDENTIALS"])
        values.update((key, value) for key, value in made.items() if key in values)
    return values


def keystone_token(username, password, project_name, url=None):
    """A project-scoped token from the test stack's keystone (or the one at url), via keystoneauth1."""
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    auth = v3.Password(
        auth_url=url or keystone_url(),
        username=username,
        password=password,
        project_name=project_name,
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return session.Session(auth=auth).get_token()


def admin_token(url=None):
    """A new token of keystone's bootstrap admin (env/keystone-accounts.env)."""
    admin = accounts("keystone-accounts.env")
    return keystone_token(
        admin["OS_BOOTSTRAP_USERNAME"], admin["OS_BOOTSTRAP_PASSWORD"], admin["OS_BOOTSTRAP_PROJECT_NAME"], url
    )


def keystone_tokens():
    """Tokens for the suites: admin, member, and placement's service user."""
    member = accounts("keystone-accounts.env")
    service = accounts("placement-keystone.env")
    return {
        "PLACEMENT_TOKEN": admin_token(),
        "PLACEMENT_MEMBER_TOKEN": keystone_token(
            member["PLACEDOCK_MEMBER_USERNAME"],
            member["PLACEDOCK_MEMBER_PASSWORD"],
            member["PLACEDOCK_MEMBER_PROJECT_NAME"],
        ),
        "PLACEMENT_SERVICE_TOKEN": keystone_token(
            service["OS_KEYSTONE_AUTHTOKEN__USERNAME"],
            service["OS_KEYSTONE_AUTHTOKEN__PASSWORD"],
            service["OS_KEYSTONE_AUTHTOKEN__PROJECT_NAME"],
        ),
    }


def test_environment(mode, database="mariadb"):
    env = {
        **ports(),
        "PLACEDOCK_AUTH_MODE": mode,
        "PLACEDOCK_DATABASE": database,
        "PLACEMENT_URL": placement_url(),
        "HAPROXY_STATS_URL": stats_url(),
        "KEYSTONE_URL": keystone_url(),
    }
    if mode == "keystone":
        env.update(keystone_tokens())
    return env


def run(args):
    stack = Stack(args.mode, database=args.database, extra=args.extra)
    keep = os.environ.get("PLACEDOCK_KEEP_STACK") == "1"
    # A SIGTERM (CI timeout, tox interrupted) still tears the stack down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    status = 1
    try:
        started = time.monotonic()
        stack.up(args.scale)
        wait_for_up(args.scale)
        print(
            f"stack: {args.mode} stack on {args.database} up, {args.scale} replicas UP in "
            f"{time.monotonic() - started:.1f}s",
            flush=True,
        )
        env = {**os.environ, **test_environment(args.mode, args.database)}
        status = subprocess.run(args.command, env=env).returncode
    finally:
        if status != 0:
            stack.dump()
        if keep:
            print(
                "stack: kept (PLACEDOCK_KEEP_STACK=1); remove it: "
                f"PLACEDOCK_PROJECT={stack.project} placedock stack down --mode {args.mode} "
                f"--database {args.database}{''.join(f' --extra {name}' for name in args.extra)}"
            )
        else:
            stack.down()
    return status


def build_parser():
    parser, sub = command_parser("stack", __doc__, subcommands="action")
    run_parser = sub.add_parser("run", help="bring the test stack up, run COMMAND, tear it down")
    run_parser.add_argument("--scale", type=int, default=3)
    run_parser.add_argument("command", nargs="+")
    parsers = [run_parser]
    for action, help_text in (("down", "tear the test stack down, volumes included"), ("build", "build the images")):
        parsers.append(sub.add_parser(action, help=help_text))
    for each in parsers:
        each.add_argument("--mode", choices=MODES, default="noauth")
        each.add_argument("--database", choices=DATABASES, default="mariadb")
        each.add_argument(
            "--extra",
            action="append",
            default=[],
            metavar="FILE",
            help="a compose file merged last (e.g. compose.autoscale.yaml)",
        )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.action == "down":
        Stack(args.mode, database=args.database, extra=args.extra).down()
    elif args.action == "build":
        Stack(args.mode, database=args.database, extra=args.extra).build()
    else:
        return run(args)
    return 0
