#!/usr/bin/env python3
"""placedock on a Docker Swarm (swarm/stack.yaml; README, "Several hosts").

    python tools/swarm.py registry [--publish SPEC ...]   start the image registry on this engine (port 5050)
    python tools/swarm.py push                            build every image, tag it, push it to the registry
    python tools/swarm.py deploy [--keystone]             secrets, docker stack deploy, wait
    python tools/swarm.py wait                            until every service has converged
    python tools/swarm.py rm                              docker stack rm, and wait until it is gone

PLACEDOCK_REGISTRY: the registry as the nodes know it (host:port), which the
stack's images are named after. PLACEDOCK_REGISTRY_PUSH: the same registry as
this engine reaches it, when that differs (the test swarm's host pushes over
loopback: tools/testswarm.py). Images are built and pushed by the local
engine; the swarm commands go to PLACEDOCK_SWARM_HOST (a manager's docker
host, e.g. unix:///run/placedock-testswarm/node-1.sock), or the local engine.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack  # noqa: E402

STACK = os.environ.get("PLACEDOCK_STACK", "placedock")
STACK_FILES = {"noauth": ["swarm/stack.yaml"], "keystone": ["swarm/stack.yaml", "swarm/keystone.yaml"]}
# Every image a stack runs (placement's tag is its release, the others' PLACEDOCK_TAG).
IMAGES = ("placement", "mariadb", "memcached", "haproxy", "keystone")
REGISTRY_IMAGE = "registry"
# The registry's port on its host: 5050, as keystone has 5000 (OpenStack's
# identity port), and both may run on the manager.
REGISTRY_PUBLISH = "5050:5000"
# The swarm secrets: made from the dev defaults in env/ when they do not exist
# yet (README, "Several hosts": make your own first). name -> (env file, variable).
SECRETS = {
    "placement-db-connection": ("placement-db.env", "OS_PLACEMENT_DATABASE__CONNECTION"),
    "keystone-db-connection": ("keystone-db.env", "OS_DATABASE__CONNECTION"),
    "keystone-admin-password": ("keystone-accounts.env", "OS_BOOTSTRAP_PASSWORD"),
    "keystone-member-password": ("keystone-accounts.env", "PLACEDOCK_MEMBER_PASSWORD"),
    "placement-service-password": ("placement-keystone.env", "OS_KEYSTONE_AUTHTOKEN__PASSWORD"),
}
# noauth mode needs only the database URL; keystone mode all of them.
NOAUTH_SECRETS = {"placement-db-connection"}


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


def build_registry():
    """Build the registry image (registry/Dockerfile), which compose does not; its name."""
    image = stack.image(REGISTRY_IMAGE)
    base, _ = stack.build_settings()
    dockerfile = stack.ROOT / "registry" / "Dockerfile"
    stack.docker(
        "build", "-q", "-f", str(dockerfile), "--build-arg", f"BASE_IMAGE={base}", "-t", image, str(stack.ROOT)
    )
    return image


def start_registry(name, publish, volume):
    """Build the registry image and run it on this engine."""
    image = build_registry()
    stack.remove(name)
    flags = [flag for spec in publish for flag in ("-p", spec)]
    stack.docker(
        "run", "-d", "--name", name, "--restart", "unless-stopped",
        "-v", f"{volume}:/var/lib/docker-registry", *flags, image,
    )  # fmt: skip
    stack.wait_until(lambda: stack.container_health(name) == "healthy", timeout=30, step=0.2, what=f"registry {name}")
    log(f"registry {name} ({image}) serves on {', '.join(publish)}")


def push():
    """Build every image with compose, tag it for the registry, push it."""
    address = registry_address(push=True)
    stack.Stack("keystone").build()
    for name in IMAGES:
        source = stack.image(name)
        target = f"{address}/{source}"
        stack.docker("tag", source, target)
        started = time.monotonic()
        stack.docker("push", "-q", target)
        log(f"pushed {target} in {time.monotonic() - started:.1f}s")


def ensure_secrets(mode):
    """Create the mode's swarm secrets that do not exist yet, from env/'s dev defaults."""
    existing = set(manager("secret", "ls", "--format", "{{.Name}}").split())
    for name, (env_file, var) in SECRETS.items():
        if mode == "noauth" and name not in NOAUTH_SECRETS:
            continue
        secret = f"placedock-{name}"
        if secret in existing:
            continue
        manager("secret", "create", secret, "-", input=stack.env_file(env_file)[var])
        log(f"secret {secret} created from env/{env_file} {var} (a dev default: make your own for real use)")


def deploy(mode, replicas, timeout):
    address = registry_address()
    ensure_secrets(mode)
    files = [flag for name in STACK_FILES[mode] for flag in ("-c", str(stack.ROOT / name))]
    env = {**os.environ, "PLACEDOCK_REGISTRY": address, "PLACEMENT_REPLICAS": str(replicas)}
    started = time.monotonic()
    manager("stack", "deploy", "--prune", *files, STACK, env=env)
    wait(timeout)
    took = time.monotonic() - started
    log(f"stack {STACK} ({mode}, {replicas} replicas) deployed and converged in {took:.1f}s")
    return took


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
        subprocess.run(["docker", *host_flags(), "service", "logs", "--no-trunc", "--tail", "60", name], check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    reg = sub.add_parser("registry", help="build and start the image registry on this engine")
    reg.add_argument("--publish", action="append", help=f"docker run -p SPEC (default {REGISTRY_PUBLISH}); repeatable")
    reg.add_argument("--name", default="placedock-registry")
    sub.add_parser("push", help="build every image, tag it for the registry, push it")
    dep = sub.add_parser("deploy", help="create missing secrets, docker stack deploy, wait until converged")
    dep.add_argument("--keystone", action="store_true", help="keystone mode (swarm/keystone.yaml)")
    dep.add_argument("--replicas", type=int, default=3)
    dep.add_argument("--timeout", type=float, default=300)
    wt = sub.add_parser("wait", help="wait until every service has converged")
    wt.add_argument("--timeout", type=float, default=300)
    sub.add_parser("rm", help="docker stack rm, and wait until it is gone")
    args = parser.parse_args()
    if args.action == "registry":
        start_registry(args.name, args.publish or [REGISTRY_PUBLISH], volume=args.name)
    elif args.action == "push":
        push()
    elif args.action == "deploy":
        deploy("keystone" if args.keystone else "noauth", args.replicas, args.timeout)
    elif args.action == "wait":
        log(f"converged in {wait(args.timeout):.1f}s")
    else:
        remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
