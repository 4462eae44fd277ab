"""Install, or pin, one openstack-placement release in the image's build stage.

    python3 release.py install VERSION VENV   # Dockerfile: VERSION with its pinned dependencies
    python3 release.py pin VERSION            # tools/pin-release: print releases/VERSION.txt

A release is installed only with the constraints file kept for it in
placement/releases/ (copied to /build/releases), so that every build of it gets
the same dependencies. `pin` makes that file: the newest versions of the
release's dependencies that had been uploaded to PyPI by the day the release
itself was, which is what the release was tested with, resolved on the base
image's Python.

Whatever goes wrong ends with one line on stderr that says what, and exit 1.
"""

import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

PACKAGE = "openstack-placement"
# Installed with every release, pinned with it: keystonemiddleware's token
# cache (memcached_servers) imports `memcache`. uWSGI and PyMySQL are the
# image's serving layer, pinned in common/constraints.txt, not per release.
EXTRAS = ["python-memcached"]
RELEASES = Path(os.environ.get("PLACEDOCK_RELEASES", "/build/releases"))
# pip learnt --uploaded-prior-to in 26.x; the base's pip is older.
PINNING_PIP = "pip==26.3"
VERSION_FORMAT = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")


class Failure(Exception):
    """One line for the user; nothing else is printed."""


def pinned_releases():
    return sorted((path.stem for path in RELEASES.glob("*.txt")), key=lambda v: tuple(map(int, v.split("."))))


def python_version():
    return ".".join(map(str, sys.version_info[:3]))


def check_format(version):
    if not VERSION_FORMAT.match(version):
        raise Failure(
            f"PLACEMENT_VERSION={version!r} is not a release number: name one, like 16.0.0 "
            f"(pinned here: {' '.join(pinned_releases())})"
        )


def pip_error(output):
    """The line of pip's output that says why, without pip's prefix."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("ERROR: Could not find a version", "ERROR: No matching distribution", "ERROR: "):
        for line in lines:
            if line.startswith(marker) and "Ignored the following versions" not in line:
                return line.removeprefix("ERROR: ")
    return lines[-1] if lines else "pip failed without saying why"


def on_index(pip, version):
    """Whether the package index offers VERSION for this Python; the versions it does offer."""
    done = subprocess.run([pip, "index", "versions", PACKAGE], capture_output=True, text=True)
    match = re.search(r"Available versions: (.*)", done.stdout)
    if done.returncode != 0 or not match:
        raise Failure(f"cannot list {PACKAGE} releases on the package index: {pip_error(done.stderr + done.stdout)}")
    offered = [v.strip() for v in match.group(1).split(",")]
    return version in offered, offered


def explain_missing(pip, version):
    """Why VERSION cannot be built: not a release, not for this Python, or not pinned yet."""
    found, offered = on_index(pip, version)
    if found:
        return Failure(
            f"{PACKAGE} {version} has no pinned dependencies here (placement/releases/{version}.txt): "
            f"make them with `tools/pin-release {version}`, or build one of {' '.join(pinned_releases())}"
        )
    return Failure(
        f"{PACKAGE} {version} is not on the package index for Python {python_version()} "
        f"(newest there: {', '.join(offered[:3])}; pinned here: {' '.join(pinned_releases())})"
    )


def install(version, venv):
    check_format(version)
    pip = str(Path(venv) / "bin" / "pip")
    constraints = RELEASES / f"{version}.txt"
    if not constraints.exists():
        raise explain_missing(pip, version)
    done = subprocess.run(
        [pip, "install", "-c", str(constraints), f"{PACKAGE}=={version}", *EXTRAS],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise Failure(f"{PACKAGE} {version} does not install on Python {python_version()}: {pip_error(done.stderr)}")
    done = subprocess.run([pip, "check"], capture_output=True, text=True)
    if done.returncode != 0:
        raise Failure(f"{PACKAGE} {version}: inconsistent dependencies: {done.stdout.strip().splitlines()[0]}")
    print(f"placedock: installed {PACKAGE} {version} with releases/{version}.txt", file=sys.stderr)


def uploaded(version):
    """When VERSION's last file reached PyPI: the upload times of PyPI's JSON
    simple API (PEP 691/700), the ones pip's --uploaded-prior-to compares."""
    url = f"https://pypi.org/simple/{PACKAGE}/"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as resp:
            files = json.load(resp)["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise Failure(f"{url}: {exc}") from None
    # openstack_placement-16.0.0.tar.gz, openstack_placement-16.0.0-py3-none-any.whl
    name = re.compile(rf"^{PACKAGE.replace('-', '_')}-{re.escape(version)}(\.tar\.gz|-.*\.whl)$")
    times = [f.get("upload-time") for f in files if name.match(f["filename"])]
    if not times:
        raise Failure(f"{PACKAGE} {version} is not on PyPI")
    if None in times:
        raise Failure(f"{url} gives no upload times: cannot pin as of the release's day")
    return max(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times)


def pin(version):
    """Print the constraints file for VERSION on stdout."""
    check_format(version)
    # A stable point release (13.0.1) is tested against its series'
    # constraints, frozen when the series' first release (13.0.0) came out.
    first = f"{version.split('.')[0]}.0.0"
    try:
        anchor, when = first, uploaded(first)
    except Failure:
        anchor, when = version, uploaded(version)
    # One minute after that upload: everything then is in, nothing later is.
    cutoff = (when + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "venv", f"{scratch}/venv"], check=True)
        pip = f"{scratch}/venv/bin/pip"
        done = subprocess.run([pip, "install", "-q", PINNING_PIP], capture_output=True, text=True)
        if done.returncode != 0:
            raise Failure(f"cannot install {PINNING_PIP} to resolve with: {pip_error(done.stderr)}")
        # The release itself may be newer than the cutoff (a point release):
        # fetched first, it is a local file, which the cutoff does not filter.
        done = subprocess.run(
            [pip, "download", "-q", "--no-deps", "-d", f"{scratch}/release", f"{PACKAGE}=={version}"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise Failure(f"{PACKAGE} {version} is not on the package index: {pip_error(done.stderr)}")
        (release,) = Path(scratch, "release").iterdir()
        done = subprocess.run(
            [pip, "install", "-q", "--uploaded-prior-to", cutoff, str(release), *EXTRAS],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise Failure(
                f"{PACKAGE} {version} does not install on Python {python_version()}: {pip_error(done.stderr)}"
            )
        # `list --format=freeze`, unlike `freeze`, says name==version for the local file too.
        listed = subprocess.run([pip, "list", "--format=freeze"], capture_output=True, text=True, check=True).stdout
    tools = ("pip==", "setuptools==", "wheel==")
    pins = sorted((line for line in listed.splitlines() if "==" in line and not line.startswith(tools)), key=str.lower)
    if f"{PACKAGE}=={version}" not in pins:
        raise Failure(f"{PACKAGE} {version} is not what got installed: {[p for p in pins if PACKAGE in p]}")
    print(f"# {PACKAGE} {version} and its dependencies, as placedock's image installs them.")
    print(f"# Made by `tools/pin-release {version}` on Python {python_version()}: the newest")
    print(f"# versions uploaded to PyPI before {cutoff}, a minute after {anchor} was.")
    print("\n".join(pins))


def main(argv):
    try:
        if len(argv) == 4 and argv[1] == "install":
            install(argv[2], argv[3])
        elif len(argv) == 3 and argv[1] == "pin":
            pin(argv[2])
        else:
            raise Failure("usage: release.py install VERSION VENV | release.py pin VERSION")
    except Failure as exc:
        print(f"placedock: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
