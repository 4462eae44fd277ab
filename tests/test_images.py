"""Images that are ours.

Never pulled from a hub under our names: in every mode's compose configuration
(noauth or keystone, each database, alone or with compose.src.yaml or compose.etcd.yaml)
a service that builds one of our images has `pull_policy: build`, every other
service of ours `never`, and `docker compose pull` skips them all
(placedock/* on Docker Hub may be anyone's).

Built from Debian packages pinned to their upstream version (an exact Debian
revision leaves the mirror at the next point release): every Dockerfile
builds, and each image lists the exact versions it installed in
/usr/share/placedock/packages.txt. The stack's own images (placement,
mariadb, memcached, haproxy) hold no apt, dpkg or perl.

Free of this host's CAs: the builds get the host's CA bundle (a
TLS-intercepting proxy's CA) as a build secret, so no final image, nor the
base, holds a certificate of it that Debian's ca-certificates does not ship,
nor anything in /usr/local/share/ca-certificates.
"""

import base64
import fnmatch
import functools
import itertools
import json
import re
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from placedock.stack import compose as stack
from placedock.stack import swarm

# Every combination of the mode files merged over compose.yaml.
MODES = list(itertools.product(stack.MODES, stack.DATABASES, ((), ("compose.src.yaml",), ("compose.etcd.yaml",))))


def mode_id(value):
    mode, database, extra = value
    return "-".join([mode, database, *(name.split(".")[1] for name in extra)])


@pytest.fixture(params=MODES, ids=mode_id)
def mode_stack(request):
    mode, database, extra = request.param
    # compose.src.yaml needs a tree; the checkout stands in for one here.
    return stack.Stack(mode, database=database, extra=extra, project="placedock-images", PLACEMENT_SRC=str(stack.ROOT))


def test_our_images_are_built_or_never_pulled(mode_stack):
    config = json.loads(mode_stack.compose("config", "--format", "json", capture=True).stdout)
    prefix = stack.image("x").split("/")[0] + "/"
    wrong = {}
    for name, service in config["services"].items():
        policy = service.get("pull_policy")
        assert service["image"].startswith(prefix), f"{name} runs {service['image']}, not one of our images"
        expected = "build" if "build" in service else "never"
        if policy != expected:
            wrong[name] = f"pull_policy {policy}, expected {expected}"
    assert not wrong


def test_compose_pull_pulls_nothing(mode_stack):
    done = mode_stack.compose("--dry-run", "pull", capture=True, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Pulling" not in output, output


# -- Debian packages ------------------------------------------------------------

DOCKERFILES = ["placement", "keystone", "mariadb", "postgres", "memcached", "haproxy", "registry", "etcd"]
PACKAGES = "/usr/share/placedock/packages.txt"


def debian_pins(name):
    """{package: version pattern} of the packages a Dockerfile pins (`"pkg=${PKG_VERSION}"`)."""
    text = (stack.ROOT / name / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    return {package: args[arg] for package, arg in re.findall(r'"([a-z0-9.+-]+)=\$\{(\w+)\}"', text)}


@functools.cache
def built_images():
    """{Dockerfile's folder: the image built from it}: every image compose builds
    in keystone mode with PostgreSQL and etcd (mariadb stays for keystone; Galera's
    nodes run the mariadb image), and the registry's."""
    build = stack.Stack("keystone", database="postgres", extra=["compose.etcd.yaml"], project="placedock-images")
    build.build()
    config = json.loads(build.compose("config", "--format", "json", capture=True).stdout)
    images = {s["build"]["dockerfile"].split("/")[0]: s["image"] for s in config["services"].values() if "build" in s}
    images["registry"] = swarm.build_registry()
    return images


def test_debian_packages_are_pinned_to_their_upstream_version():
    pins = {name: debian_pins(name) for name in DOCKERFILES}
    assert {p for pinned in pins.values() for p in pinned} >= {
        "haproxy", "socat", "mariadb-server", "galera-4", "postgresql-15", "memcached", "docker-registry",
        "etcd-server",
    }  # fmt: skip
    exact = {p: v for pinned in pins.values() for p, v in pinned.items() if not re.fullmatch(r"(\d+:)?[\d.]+\.\*", v)}
    assert not exact, "pin the upstream version (haproxy=2.6.*), not a Debian revision"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_builds_and_records_its_packages(name):
    image = built_images()[name]
    listed = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "cat", image, PACKAGES], capture_output=True, text=True
    )
    assert listed.returncode == 0, f"{image}: no {PACKAGES}: {listed.stderr.strip()}"
    installed = dict(line.split("=", 1) for line in listed.stdout.splitlines())
    assert "base-files" in installed, f"{image}: {PACKAGES} lists {len(installed)} packages"
    for package, pattern in debian_pins(name).items():
        assert package in installed, f"{image}: {package} is not in {PACKAGES}"
        version = installed[package]
        assert fnmatch.fnmatchcase(version, pattern), f"{image}: {package}={version}, pinned {pattern}"


# The stack's own images are built FROM scratch (common/rootfs.py): what their
# programs run on, nothing to install more with, and the packages they hold
# recorded where image scanners look for them.
FROM_SCRATCH = ["placement", "mariadb", "memcached", "haproxy"]
INSTALLERS = ["/usr/bin/apt-get", "/usr/bin/dpkg", "/usr/bin/perl"]


@pytest.mark.parametrize("name", FROM_SCRATCH)
def test_the_stack_s_images_hold_no_package_manager_nor_perl(name):
    image = built_images()[name]
    files = stack.image_files(image)
    assert [path for path in INSTALLERS if path in files] == [], f"{image} holds them"
    assert "/var/lib/dpkg/status" in files, f"{image}: nothing for an image scanner to read"


# -- the host's CAs ---------------------------------------------------------------

PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Where Debian's ca-certificates package puts the CAs it ships.
DEBIAN_CAS = Path("/usr/share/ca-certificates")


def certificates(data):
    """The DER bytes of every PEM certificate in `data`."""
    return {base64.b64decode(b"".join(body.split())) for body in PEM.findall(data)}


def host_only_certificates():
    """Certificates of the host's bundles (the system one and HOST_CA_BUNDLE as
    compose reads it) that Debian's ca-certificates does not ship: a proxy's CA."""
    _, configured = stack.build_settings()
    bundles = {HOST_BUNDLE, Path(configured)} - {Path("/dev/null")}
    given = set().union(*(certificates(path.read_bytes()) for path in bundles if path.is_file()))
    debian = set().union(*(certificates(path.read_bytes()) for path in DEBIAN_CAS.rglob("*.crt")))
    return given - debian


def image_certificates(image):
    """{path: certificates} of the files of an image that can hold CAs: under
    /etc/ssl and /usr/local/share/ca-certificates, and any *.crt or *.pem."""
    container = f"placedock-images-{uuid.uuid4().hex[:8]}"
    stack.docker("create", "--name", container, image)
    found = {}
    try:
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                wanted = name.startswith(("etc/ssl/", "usr/local/share/ca-certificates/")) or name.endswith(
                    (".crt", ".pem")
                )
                if member.isfile() and wanted:
                    found[name] = certificates(tar.extractfile(member).read())
        assert export.wait() == 0, f"docker export {image} failed"
    finally:
        stack.remove(container)
    return found


@pytest.fixture(scope="module")
def host_cas():
    return host_only_certificates()


@pytest.mark.parametrize("name", ["base", *DOCKERFILES])
def test_no_image_holds_the_hosts_cas(name, host_cas):
    image = stack.build_settings()[0] if name == "base" else built_images()[name]
    found = image_certificates(image)
    local = sorted(path for path in found if path.startswith("usr/local/share/ca-certificates/"))
    assert not local, f"{image}: local CAs {local}"
    leaked = sorted(path for path, certs in found.items() if certs & host_cas)
    assert not leaked, f"{image}: a CA of this host in {leaked}"
