"""placedock on a Docker Swarm (swarm/stack.yaml; docs/several-hosts.md).

    placedock swarm secrets [--dev]                 make every missing swarm secret (strong, random)
    placedock swarm registry --address ADDR         start the image registry on this engine, with credentials
    placedock swarm push                            build every image, tag it, push it to the registry
    placedock swarm deploy                          keystone mode: docker stack deploy, wait
    placedock swarm deploy --serve-unauthenticated-to CIDR
                                                          noauth mode, served to those clients only
    placedock swarm scale N                         N placement replicas (1 to 10)
    placedock swarm wait                            until every service has converged
    placedock swarm rm                              docker stack rm, and wait until it is gone

PLACEDOCK_REGISTRY: the registry as the nodes know it (host:port), which the
stack's images are named after. PLACEDOCK_REGISTRY_PUSH: the same registry as
this engine reaches it, when that differs (the test swarm's host pushes over
loopback: placedock testswarm). Images are built and pushed by the local
engine; the swarm commands go to PLACEDOCK_SWARM_HOST (a manager's docker
host, e.g. unix:///run/placedock-testswarm/node-1.sock), or the local engine.
What this tool makes that a person needs again (the registry's password, the
values of the secrets it made) is kept in PLACEDOCK_SWARM_STATE (.swarm/ in
this checkout, not committed), readable by its owner only.
"""

import ipaddress
import os
import re
import secrets as random
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from placedock.cli import command_parser
from placedock.stack import compose as stack

STACK = os.environ.get("PLACEDOCK_STACK", "placedock")
STACK_FILES = {"noauth": ["swarm/stack.yaml"], "keystone": ["swarm/stack.yaml", "swarm/keystone.yaml"]}
ENCRYPTED = "swarm/encrypted.yaml"  # merged last: the overlay network encrypted
ETCD = "swarm/etcd.yaml"  # options from etcd: a cluster of 3 members (deploy --etcd)
# Every image a stack runs (placement's tag is its release, the others' PLACEDOCK_TAG).
IMAGES = ("placement", "mariadb", "memcached", "haproxy", "keystone", "etcd")
REGISTRY_IMAGE = "registry"
# The registry's port on its host: 5050, as keystone has 5000 (OpenStack's
# identity port), and both may run on the manager.
REGISTRY_PORT = 5050
REGISTRY_USER = "placedock"
# The stack's swarm secrets, named STACK-NAME: name -> (variable, env file
# holding its committed dev value, or None). Every one is made by `secrets`.
SECRETS = {
    "placement-db-connection": ("OS_PLACEMENT_DATABASE__CONNECTION", "placement-db.env"),
    "haproxy-stats-password": ("HAPROXY_STATS_PASSWORD", None),
    "keystone-db-connection": ("OS_DATABASE__CONNECTION", "keystone-db.env"),
    "keystone-admin-password": ("OS_BOOTSTRAP_PASSWORD", "keystone-accounts.env"),
    "keystone-member-password": ("PLACEDOCK_MEMBER_PASSWORD", "keystone-accounts.env"),
    "placement-service-password": ("OS_KEYSTONE_AUTHTOKEN__PASSWORD", "placement-keystone.env"),
    "placement-memcache-secret-key": ("OS_KEYSTONE_AUTHTOKEN__MEMCACHE_SECRET_KEY", None),
}
# noauth mode needs only these; keystone mode all of them.
NOAUTH_SECRETS = ("placement-db-connection", "haproxy-stats-password")


def log(message):
    print(f"swarm: {message}", file=sys.stderr, flush=True)


def host_flags():
    host = os.environ.get("PLACEDOCK_SWARM_HOST")
    return ["-H", host] if host else []


def manager(*args, check=True, env=None, input=None):
    """A docker command to the swarm's manager (PLACEDOCK_SWARM_HOST, else
    this engine); its output, stripped."""
    command = ["docker", *host_flags(), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {(done.stderr or '').strip()[-2000:]}")
    return (done.stdout or "").strip()


def registry_address(push=False):
    """host:port of the registry, as the nodes know it, or as this engine pushes to it."""
    value = (push and os.environ.get("PLACEDOCK_REGISTRY_PUSH")) or os.environ.get("PLACEDOCK_REGISTRY")
    if not value:
        sys.exit("swarm: PLACEDOCK_REGISTRY is not set: the registry the nodes pull from, e.g. manager.example:5050")
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?", value):
        sys.exit(f"swarm: PLACEDOCK_REGISTRY={value} is not host:port")
    return value


def service(name):
    return f"{STACK}_{name}"


def state(name):
    """PLACEDOCK_SWARM_STATE/NAME, the directory made readable by its owner only."""
    directory = Path(os.environ.get("PLACEDOCK_SWARM_STATE") or stack.ROOT / ".swarm")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory / name


def saved_secrets():
    """The file of VARIABLE=value lines that `secrets` appends what it made to."""
    return state(f"{STACK}-secrets.env")


def secret_name(name):
    return f"{STACK}-{name}"


def build_registry():
    """Build the registry image (registry/Dockerfile), which compose does not; its name."""
    image = stack.image(REGISTRY_IMAGE)
    base, _ = stack.build_settings()
    dockerfile = stack.ROOT / "registry" / "Dockerfile"
    stack.docker(
        "build", "-q", "-f", str(dockerfile), "--build-arg", f"BASE_IMAGE={base}", "-t", image, str(stack.ROOT)
    )
    return image


def registry_password():
    """The registry's password: PLACEDOCK_SWARM_STATE/registry-password, made (random) the first time."""
    path = state("registry-password")
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(random.token_urlsafe(32))
    return path.read_text().strip()


def htpasswd(image, password):
    """The registry's htpasswd line for REGISTRY_USER (bcrypt, by the image's own htpasswd)."""
    return stack.docker(
        "run", "--rm", "-i", "--entrypoint", "htpasswd", image, "-niB", REGISTRY_USER, input=password
    ).strip()


def login(address, host=None):
    """docker login to the registry at ADDRESS with its credentials, by this
    engine or the one at HOST (which must reach it); the CLI keeps them (in
    DOCKER_CONFIG) where `docker stack deploy --with-registry-auth` finds them."""
    flags = ["-H", host] if host else []
    stack.docker(*flags, "login", "-u", REGISTRY_USER, "--password-stdin", address, input=registry_password())


def start_registry(name, addresses, volume, port=REGISTRY_PORT):
    """Build the registry image and run it on this engine, published on each
    of ADDRESSES (IPv4[:port]) only; push and pull need its credentials."""
    publish = []
    for address in addresses:
        host, _, own_port = address.partition(":")
        try:
            ipaddress.ip_address(host)  # docker run -p wants an address: a name would be taken as a port
        except ValueError:
            sys.exit(f"swarm: registry --address {address}: not an IP address of this host (ADDR or ADDR:PORT)")
        publish += ["-p", f"{host}:{own_port or port}:5000"]
    image = build_registry()
    stack.remove(name)
    auth = state("registry.htpasswd")
    auth.write_text(htpasswd(image, registry_password()) + "\n")
    auth.chmod(0o644)  # the registry's user reads it; it holds a bcrypt hash, not the password
    stack.docker(
        "run", "-d", "--name", name, "--restart", "unless-stopped",
        "-v", f"{volume}:/var/lib/docker-registry", "-v", f"{auth}:/etc/docker/registry/htpasswd:ro",
        *publish, image,
    )  # fmt: skip
    stack.wait_until(lambda: stack.container_health(name) == "healthy", timeout=30, step=0.2, what=f"registry {name}")
    log(
        f"registry {name} ({image}) serves on {', '.join(addresses)}; "
        f"user {REGISTRY_USER}, password in {state('registry-password')}"
    )


def push():
    """Build every image with compose, tag it for the registry, push it."""
    address = registry_address(push=True)
    stack.Stack("keystone", extra=["compose.etcd.yaml"]).build()
    for name in IMAGES:
        source = stack.image(name)
        target = f"{address}/{source}"
        stack.docker("tag", source, target)
        started = time.monotonic()
        try:
            stack.docker("push", "-q", target)
        except subprocess.CalledProcessError as exc:
            # Typically "no basic auth credentials": not logged in to the registry.
            sys.exit(f"swarm: docker push {target}: {exc.stderr.strip().splitlines()[-1]} (docs/troubleshooting.md)")
        log(f"pushed {target} in {time.monotonic() - started:.1f}s")


def existing_secrets():
    return set(manager("secret", "ls", "--format", "{{.Name}}").split())


def random_value(name):
    """A new value for secret NAME: 256 random bits; a database URL is env/'s
    with that as its password."""
    password = random.token_urlsafe(32)
    variable, env = SECRETS[name]
    if not variable.endswith("__CONNECTION"):
        return password
    url = urllib.parse.urlsplit(stack.env_file(env)[variable])
    netloc = f"{url.username}:{password}@{url.hostname}" + (f":{url.port}" if url.port else "")
    return urllib.parse.urlunsplit(url._replace(netloc=netloc))


def make_secrets(dev=False):
    """Create every secret of the stack that does not exist yet: random, or
    (dev) env/'s committed dev value where it has one. What was made is
    appended to saved_secrets(), as VARIABLE=value lines; the names made."""
    missing = [name for name in SECRETS if secret_name(name) not in existing_secrets()]
    saved = saved_secrets()
    made = []
    for name in missing:
        variable, env = SECRETS[name]
        value = stack.env_file(env)[variable] if dev and env else random_value(name)
        manager("secret", "create", "--label", f"placedock.dev={str(dev).lower()}", secret_name(name), "-", input=value)
        if not saved.exists():
            saved.touch(mode=0o600)
        with saved.open("a") as out:
            out.write(f"# {secret_name(name)}\n{variable}={value}\n")
        made.append(secret_name(name))
    how = "env/'s dev values where they have one: for a test swarm only" if dev else "random"
    log(f"secrets made ({how}): {', '.join(made) or 'none, all existed'}; their values appended to {saved}")
    return made


def check_secrets(mode):
    """Exit with one line when a secret the mode needs does not exist."""
    needed = NOAUTH_SECRETS if mode == "noauth" else tuple(SECRETS)
    missing = [secret_name(name) for name in needed if secret_name(name) not in existing_secrets()]
    if missing:
        sys.exit(
            f"swarm: secret {', '.join(missing)} does not exist: `placedock swarm secrets` makes every "
            "missing one (strong, random; `deploy --dev-secrets` uses env/'s dev values instead, for a test swarm only)"
        )


def check_replicas(replicas):
    """Exit with one line unless 1 <= REPLICAS <= haproxy's server slots."""
    most = stack.server_slots()
    if not 1 <= replicas <= most:
        sys.exit(
            f"swarm: {replicas} placement replicas: from 1 to {most}, as haproxy has {most} server slots "
            "(haproxy.cfg's server-template): a replica beyond them would never get a request"
        )
    return replicas


def check_clients(cidrs):
    """The CIDRs as haproxy's src ACL takes them, space separated; exit with one line on a bad one."""
    try:
        return " ".join(str(ipaddress.ip_network(cidr, strict=False)) for cidr in cidrs)
    except ValueError as exc:
        sys.exit(f"swarm: --serve-unauthenticated-to: {exc}")


def stack_files(mode, encrypted=True, etcd=False):
    """The compose files of a MODE deploy, in merge order."""
    return STACK_FILES[mode] + ([ETCD] if etcd else []) + ([ENCRYPTED] if encrypted else [])


def deploy(mode, replicas, timeout, clients=(), dev_secrets=False, encrypted=True, etcd=False):
    """docker stack deploy in MODE (keystone, or noauth served to CLIENTS
    only), the overlay network encrypted unless not ENCRYPTED, with the
    options from an etcd cluster if ETCD, then wait."""
    address = registry_address()
    check_replicas(replicas)
    if mode == "keystone" and not os.environ.get("PLACEDOCK_PUBLIC_HOST"):
        sys.exit("swarm: PLACEDOCK_PUBLIC_HOST is not set: the address of the node labelled placedock.keystone")
    if dev_secrets:
        make_secrets(dev=True)
    check_secrets(mode)
    files = [flag for name in stack_files(mode, encrypted, etcd) for flag in ("-c", str(stack.ROOT / name))]
    env = {**os.environ, "PLACEDOCK_REGISTRY": address, "PLACEMENT_REPLICAS": str(replicas), "PLACEDOCK_STACK": STACK}
    if mode == "noauth":
        env["HAPROXY_ALLOW_FROM"] = check_clients(clients)
    started = time.monotonic()
    # --with-registry-auth: the nodes pull with this client's registry credentials.
    manager("stack", "deploy", "--prune", "--with-registry-auth", *files, STACK, env=env)
    wait(timeout)
    took = time.monotonic() - started
    served = f"served without authentication to {env['HAPROXY_ALLOW_FROM']}" if mode == "noauth" else "keystone"
    log(f"stack {STACK} ({served}, {replicas} replicas) deployed and converged in {took:.1f}s")
    return took


def scale(replicas, timeout):
    """N placement replicas, then wait until converged."""
    check_replicas(replicas)
    manager("service", "scale", "--detach", f"{service('placement')}={replicas}")
    return wait(timeout)


def services():
    """{service: (mode, running, desired, completed)} of the stack's services;
    completed counts a job's finished runs, else is None."""
    out = manager("stack", "services", STACK, "--format", "{{.Name}}\t{{.Mode}}\t{{.Replicas}}")
    found = {}
    for line in out.splitlines():
        name, mode, replicas = line.split("\t")
        running, desired = map(int, re.match(r"(\d+)/(\d+)", replicas).groups())
        done = re.search(r"\((\d+)/\d+ completed\)", replicas)
        found[name] = (mode, running, desired, int(done.group(1)) if done else None)
    return found


def converged():
    """Every service runs what it should (running means healthy, where the
    image has a healthcheck), every job has completed, and no update is
    under way."""
    current = services()
    if not current:
        return False
    for name, (mode, running, desired, completed) in current.items():
        if mode.endswith("job"):
            if completed < desired:
                return False
        elif running != desired or update_state(name) in ("updating", "rollback_started"):
            return False
    return True


def update_state(name):
    """A service's update status: '' (never updated), updating, completed,
    paused, rollback_started, rollback_completed, rollback_paused."""
    return manager("service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", name)


def wait(timeout, settle=3):
    """Seconds until the stack has converged and stayed so for `settle`
    seconds: swarm starts a service's update a moment after the deploy
    returned, and until then the old tasks look converged. A TimeoutError
    with the tasks that have not, after `timeout`."""
    stable_since = None

    def settled():
        nonlocal stable_since
        if not converged():
            stable_since = None
            return False
        stable_since = stable_since or time.monotonic()
        return time.monotonic() - stable_since >= settle

    try:
        return stack.wait_until(settled, timeout=timeout, step=1, what=f"stack {STACK} converged")
    except TimeoutError:
        log(manager("stack", "ps", STACK, "--no-trunc", "--format", "{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}"))
        raise


def remove(timeout=120):
    """docker stack rm, then wait until no task of the stack is left anywhere."""
    manager("stack", "rm", STACK, check=False)

    def gone():
        return not manager("stack", "ps", STACK, "-q", check=False) and not manager(
            "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"
        )

    stack.wait_until(gone, timeout=timeout, step=1, what=f"stack {STACK} removed")


def dump():
    """The stack's tasks and each service's last log lines, for a failed run."""
    print(manager("stack", "ps", STACK, "--no-trunc", check=False), flush=True)
    for name in manager("stack", "services", STACK, "--format", "{{.Name}}", check=False).split():
        print(f"--- {name}", flush=True)
        command = ["docker", *host_flags(), "service", "logs", "--no-trunc", "--tail", "60", name]
        try:
            # It can wait for good on a task's log that never ends (seen here
            # after a drain and 10 rolling updates).
            subprocess.run(command, check=False, timeout=30)
        except subprocess.TimeoutExpired:
            print(f"(docker service logs {name}: no end after 30 s, left)", flush=True)


def build_parser():
    parser, sub = command_parser("swarm", __doc__, subcommands="action")
    sec = sub.add_parser("secrets", help="make every missing swarm secret of the stack: strong and random")
    sec.add_argument("--dev", action="store_true", help="env/'s committed dev values instead: a test swarm only")
    reg = sub.add_parser("registry", help="build and start the image registry on this engine, with credentials")
    reg.add_argument(
        "--address",
        action="append",
        required=True,
        help=f"an address of this host to serve on (port {REGISTRY_PORT}, or ADDR:PORT); repeatable",
    )
    reg.add_argument("--name", default="placedock-registry")
    sub.add_parser("push", help="build every image, tag it for the registry, push it")
    dep = sub.add_parser("deploy", help="docker stack deploy (keystone mode), wait until converged")
    dep.add_argument(
        "--serve-unauthenticated-to",
        metavar="CIDR",
        action="append",
        default=[],
        help="noauth mode instead: anyone at these addresses is placement's admin; repeatable",
    )
    try:
        default_replicas = int(os.environ.get("PLACEMENT_REPLICAS") or 3)
    except ValueError:
        sys.exit(f"swarm: PLACEMENT_REPLICAS={os.environ['PLACEMENT_REPLICAS']} is not a number of replicas")
    dep.add_argument(
        "--replicas",
        type=int,
        default=default_replicas,
        help=f"placement replicas, 1 to {stack.server_slots()} (default PLACEMENT_REPLICAS, else 3)",
    )
    dep.add_argument(
        "--unencrypted-overlay",
        action="store_true",
        help="the network between the nodes in clear text: for kernels without ESP (docs/several-hosts.md)",
    )
    dep.add_argument(
        "--dev-secrets",
        action="store_true",
        help="make missing secrets from env/'s committed dev values first: a test swarm only",
    )
    dep.add_argument(
        "--etcd",
        action="store_true",
        help="placement's dynamic options from an etcd cluster of 3 members (swarm/etcd.yaml; nodes labelled "
        "placedock.etcd=1, 2, 3)",
    )
    dep.add_argument("--timeout", type=float, default=300)
    scl = sub.add_parser("scale", help=f"N placement replicas (1 to {stack.server_slots()}), wait until converged")
    scl.add_argument("replicas", type=int)
    scl.add_argument("--timeout", type=float, default=300)
    wt = sub.add_parser("wait", help="wait until every service has converged")
    wt.add_argument("--timeout", type=float, default=300)
    sub.add_parser("rm", help="docker stack rm, and wait until it is gone")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.action == "secrets":
        make_secrets(dev=args.dev)
    elif args.action == "registry":
        start_registry(args.name, args.address, volume=args.name)
        for address in args.address:
            login(address if ":" in address else f"{address}:{REGISTRY_PORT}")
    elif args.action == "push":
        push()
    elif args.action == "deploy":
        mode = "noauth" if args.serve_unauthenticated_to else "keystone"
        clients, encrypted = args.serve_unauthenticated_to, not args.unencrypted_overlay
        deploy(mode, args.replicas, args.timeout, clients, args.dev_secrets, encrypted=encrypted, etcd=args.etcd)
    elif args.action == "scale":
        log(f"{args.replicas} replicas, converged in {scale(args.replicas, args.timeout):.1f}s")
    elif args.action == "wait":
        log(f"converged in {wait(args.timeout):.1f}s")
    else:
        remove()
    return 0
