"""Render kubernetes/ and validate it offline.

    placedock kube check [--tree DIR] [OVERLAY ...]   render, then validate every object
    placedock kube render [--tree DIR] OVERLAY        print one overlay's manifests

An overlay is a directory of kubernetes/overlays/ (by default: all of them);
--tree checks another copy of kubernetes/ (the tests break one on purpose).
Rendering is the standalone kustomize (tools/install-kustomize); `kubectl
apply -k` renders the same. Every rendered object is then validated strictly
(no unknown field) against the JSON schemas of each Kubernetes release from
MIN_KUBERNETES to the newest that kubernetes-validate carries, with no cluster.
An object of an API version that a release does not serve has no schema there:
that is a failure, not a warning. `check` prints one line per problem and
exits 1 if there is any.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from placedock.cli import command_parser
from placedock.stack import compose

TREE = compose.ROOT / "kubernetes"
# The oldest release these manifests are written for (autoscaling/v2 and
# policy/v1 are GA long before it; unhealthyPodEvictionPolicy is GA in 1.31).
MIN_KUBERNETES = "1.31"


class RenderError(Exception):
    pass


def overlays(tree=TREE):
    return sorted(path.name for path in (tree / "overlays").iterdir() if (path / "kustomization.yaml").is_file())


def kustomize():
    binary = shutil.which("kustomize")
    if binary is None:
        raise RenderError("kustomize is not installed: run tools/install-kustomize")
    return binary


def build(directory):
    """What `kustomize build` prints for a kustomization directory."""
    result = subprocess.run([kustomize(), "build", str(directory)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RenderError(f"{directory}: kustomize build failed: {result.stderr.strip()}")
    return result.stdout


def render(directory):
    """The objects kustomize renders from a kustomization directory."""
    return [doc for doc in yaml.safe_load_all(build(directory)) if doc]


def versions():
    """The Kubernetes releases to validate against, oldest first."""
    from kubernetes_validate import utils
    from packaging.version import Version

    return [v for v in utils.all_versions() if Version(v) >= Version(MIN_KUBERNETES)]


def name(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} ({obj.get('apiVersion')})"


def validate(objects, releases=None):
    """One line per object that is invalid, or unknown, in one of `releases`."""
    from kubernetes_validate import utils

    problems = []
    for release in releases or versions():
        for obj in objects:
            try:
                utils.validate(obj, release, strict=True)
            except utils.SchemaNotFoundError:
                problems.append(f"{name(obj)}: Kubernetes {release} serves no such kind and API version")
            except utils.ValidationError as exc:
                where = "/".join(str(part) for part in exc.path) or "(top)"
                problems.append(f"{name(obj)}: Kubernetes {release}: {where}: {exc.message}")
    return problems


def check(tree, names):
    releases = versions()
    failed = False
    for overlay in names:
        try:
            objects = render(tree / "overlays" / overlay)
        except RenderError as exc:
            print(f"kube: {exc}")
            failed = True
            continue
        problems = validate(objects, releases)
        for problem in problems:
            print(f"kube: {overlay}: {problem}")
        failed = failed or bool(problems)
        verdict = f"{len(problems)} problem(s)" if problems else "valid"
        print(f"kube: {overlay}: {len(objects)} objects, Kubernetes {releases[0]} to {releases[-1]}: {verdict}")
    return 1 if failed else 0


def build_parser():
    parser, sub = command_parser("kube", __doc__, subcommands="command")
    check_parser = sub.add_parser("check", help="render and validate overlays (default: all)")
    check_parser.add_argument("overlays", nargs="*", metavar="OVERLAY")
    render_parser = sub.add_parser("render", help="print one overlay's manifests")
    render_parser.add_argument("overlay", metavar="OVERLAY")
    for sub_parser in (check_parser, render_parser):
        sub_parser.add_argument(
            "--tree", type=Path, default=TREE, help="the kubernetes/ directory (default: %(default)s)"
        )
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    known = overlays(args.tree) if (args.tree / "overlays").is_dir() else []
    if not known:
        parser.error(f"{args.tree / 'overlays'}: no overlay there (a directory with a kustomization.yaml)")
    for overlay in args.overlays if args.command == "check" else [args.overlay]:
        if overlay not in known:
            parser.error(f"no overlay {overlay!r} in {args.tree / 'overlays'} (there: {', '.join(known)})")
    if args.command == "render":
        try:
            print(build(args.tree / "overlays" / args.overlay), end="")
        except RenderError as exc:
            sys.exit(f"kube: {exc}")
        return 0
    return check(args.tree, args.overlays or known)
