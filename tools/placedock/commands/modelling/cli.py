"""The modelling playground: describe a provider topology once (modelling/*.yaml,
format in docs/modelling.md), apply it to placement, run its queries, draw it.

    placedock modelling check FILE...                 validate, offline
    placedock modelling apply FILE [--reset]           create it through the API (again: no change)
    placedock modelling query FILE [QUERY...]         run its queries; exit 1 if one is not as expected
    placedock modelling draw FILE [--query Q [--candidate N]] [--output STEM]

--url (or PLACEMENT_URL) is placement's front door, http://127.0.0.1:8778 by
default: the compose stack, or the standalone sqlite container. The token
(--token, PLACEMENT_TOKEN) is `admin`, noauth's; in keystone mode give a real one.
"""

import os
import sys
from pathlib import Path

import requests

from placedock.api.client import ApiError, Client
from placedock.cli import command_parser
from placedock.commands.modelling import apply, draw, query, spec


def client(args):
    return Client(args.url, {"x-auth-token": args.token, "accept": "application/json"})


def loaded(args, scenario):
    """A client for a placement that holds the scenario as its file says, or ScenarioError."""
    api = client(args)
    apply.check_server(api)
    there = apply.Loader(api, scenario).loaded_trees()
    missing = [name for uu, name in scenario.by_uuid().items() if uu not in there]
    if missing:
        raise spec.ScenarioError(
            f"{scenario.path}: not loaded at {args.url} (no {', '.join(missing[:3])}): run `apply` first"
        )
    return api


def cmd_check(args):
    bad = 0
    for path in args.files:
        try:
            scenario = spec.read(path)
        except spec.ScenarioError as exc:
            print(exc, file=sys.stderr)
            bad += 1
            continue
        print(
            f"{path}: {scenario.name}: {len(scenario.providers)} providers, {len(scenario.consumers)} consumers, "
            f"{len(scenario.queries)} queries: OK"
        )
    return 2 if bad else 0


def cmd_apply(args):
    spec.read(args.file)  # offline first: a bad file is refused before placement is asked
    api = client(args)
    apply.check_server(api)
    scenario = spec.read(args.file, known=apply.standard_names(api))
    loader = apply.Loader(api, scenario)
    if args.reset:
        providers, consumers = loader.reset()
        print(f"{scenario.name}: reset: {providers} providers and {consumers} consumers of an earlier load removed")
    apply.check_against(api, scenario)
    writes = loader.load()
    print(
        f"{scenario.name}: {len(scenario.providers)} providers, {len(scenario.consumers)} consumers at {args.url}: "
        + (f"{writes} writes" if writes else "already loaded, nothing changed")
    )
    strays = loader.strays()
    if strays:
        print(
            f"{scenario.name}: left from an earlier load, not in the file: {', '.join(strays)} (--reset removes them)"
        )
    return 0


def cmd_query(args):
    scenario = spec.read(args.file)
    unknown = [q for q in args.queries if q not in scenario.queries]
    if unknown:
        raise spec.ScenarioError(
            f"{args.file}: no query named {', '.join(unknown)} (it has: {', '.join(scenario.queries)})"
        )
    runner = query.Runner(loaded(args, scenario), scenario)
    failed = 0
    for name in args.queries or scenario.queries:
        result = runner.run(name)
        print("\n".join(result.lines()) + "\n")
        failed += not result.matches
    print(f"{scenario.name}: {len(args.queries or scenario.queries) - failed} as expected, {failed} not")
    return 1 if failed else 0


def cmd_draw(args):
    scenario = spec.read(args.file)
    api = loaded(args, scenario)
    candidate, title = None, None
    if args.query:
        if args.query not in scenario.queries:
            raise spec.ScenarioError(
                f"{args.file}: no query named {args.query} (it has: {', '.join(scenario.queries)})"
            )
        result = query.Runner(api, scenario).run(args.query)
        if not 1 <= args.candidate <= len(result.candidates):
            raise spec.ScenarioError(
                f"query {args.query} has {len(result.candidates)} candidate(s); no #{args.candidate}"
            )
        candidate = result.candidates[args.candidate - 1]
        title = f"{scenario.name}: query {args.query}, candidate #{args.candidate} of {len(result.candidates)}"
    source = draw.dot(scenario, apply.live_state(api, scenario), candidate, title)
    for path in draw.render(source, Path(args.output or scenario.name)):
        print(path)
    return 0


def build_parser():
    parser, sub = command_parser("modelling", __doc__, subcommands="command")
    check = sub.add_parser("check", help="validate model files, with no placement")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=cmd_check)
    for name, func, text in (
        ("apply", cmd_apply, "create a model in placement; applying it again changes nothing"),
        ("query", cmd_query, "run a model's queries and compare them with its expectations"),
        ("draw", cmd_draw, "render an applied model's provider trees as SVG and PNG"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("file")
        p.add_argument("--url", default=os.environ.get("PLACEMENT_URL", "http://127.0.0.1:8778"))
        p.add_argument("--token", default=os.environ.get("PLACEMENT_TOKEN", "admin"))
        p.set_defaults(func=func)
    sub.choices["apply"].add_argument(
        "--reset", action="store_true", help="first remove what an earlier apply of this model made"
    )
    sub.choices["query"].add_argument("queries", nargs="*", metavar="QUERY", help="by name; all by default")
    sub.choices["draw"].add_argument("--query", help="highlight a candidate of this query")
    sub.choices["draw"].add_argument("--candidate", type=int, default=1, help="which one (default 1)")
    sub.choices["draw"].add_argument("--output", help="path without extension (default: the model's name)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except spec.ScenarioError as exc:
        print(exc, file=sys.stderr)
    except ApiError as exc:
        print(f"placement refused: {exc}", file=sys.stderr)
    except requests.ConnectionError:
        print(f"placement is not answering at {args.url} (--url, PLACEMENT_URL)", file=sys.stderr)
    return 2
