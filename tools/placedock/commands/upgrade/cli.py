"""Rehearse a rolling upgrade of placement, release N-1 -> N, under load.

    placedock upgrade --from 15.0.0 --to 16.0.0 [--database mariadb|postgres] [--replicas 3] [--nodes 8] [--keep]

Brings up its own compose project (placedock-upgrade, noauth, the test ports
18778/18404) on --from, loads a data set, upgrades to --to one replica at a
time while readers and writers go through haproxy, checks that nothing was
lost, prints a report and removes the project (unless --keep). Exit 0 when
every check passed. Both releases must be pinned in placement/releases/.
Downgrades are not rehearsed: placement does not support them.
"""

import argparse

from placedock.cli import command_parser
from placedock.commands.upgrade import rehearsal
from placedock.stack import compose as stack


def release(value):
    path = stack.ROOT / "placement" / "releases" / f"{value}.txt"
    if not path.exists():
        pinned = " ".join(sorted(p.stem for p in path.parent.glob("*.txt")))
        raise argparse.ArgumentTypeError(f"{value} is not pinned in placement/releases/ (pinned: {pinned})")
    return value


def build_parser():
    parser = command_parser("upgrade", __doc__)
    parser.add_argument("--from", dest="old", type=release, required=True, help="release N-1, e.g. 15.0.0")
    parser.add_argument(
        "--to",
        dest="new",
        type=release,
        help="release N (default: the one compose builds, PLACEMENT_VERSION or compose.yaml's)",
    )
    parser.add_argument(
        "--database", choices=("mariadb", "postgres"), default="mariadb", help="placement's database (default: mariadb)"
    )
    parser.add_argument("--replicas", type=int, default=3, help="placement replicas (at least 2)")
    parser.add_argument("--nodes", type=int, default=8, help="compute nodes in the data set (4 providers each)")
    parser.add_argument("--keep", action="store_true", help="leave the stack up afterwards")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.new = args.new or stack.placement_release()
    if args.replicas < 2:
        parser.error("--replicas: at least 2, or nothing serves while the one replica is replaced")
    key = tuple(map(int, args.old.split("."))), tuple(map(int, args.new.split(".")))
    if key[0] >= key[1]:
        parser.error(f"--from {args.old} is not older than --to {args.new}: placement does not support downgrades")
    report = rehearsal.rehearse(args.old, args.new, args.replicas, args.nodes, keep=args.keep, database=args.database)
    print(report.format())
    return 0 if report.passed else 1
