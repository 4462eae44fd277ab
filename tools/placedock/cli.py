"""`placedock`: the one entry point. Each command is a module with
build_parser() and main(argv); this table is the whole dispatch, and a
command's module is imported only when it runs."""

import argparse
import importlib
import sys

# name: (module, one line for `placedock --help`), in the order a newcomer meets them.
COMMANDS = {
    "stack": ("placedock.stack.compose", "bring the test stack up, run a command against it, take it down"),
    "modelling": ("placedock.commands.modelling.cli", "check, apply, query and draw a provider model"),
    "upgrade": ("placedock.commands.upgrade.cli", "rehearse a rolling upgrade N-1 -> N under traffic"),
    "bench": ("placedock.commands.bench.cli", "measure the stack against plain uwsgi; write docs/benchmark.md"),
    "autoscale": ("placedock.commands.autoscale.cli", "apply kubernetes/'s autoscaler to the compose stack or swarm"),
    "kube": ("placedock.stack.kube", "render and validate kubernetes/ offline"),
    "swarm": ("placedock.stack.swarm", "secrets, registry, push and deploy on a Docker Swarm"),
    "testswarm": ("placedock.stack.testswarm", "a swarm of test hosts on this machine (root)"),
}


def command_parser(name, doc, subcommands=None):
    """The parser of `placedock NAME`, with its module's docstring as the help;
    with SUBCOMMANDS (the attribute that names the one given), (parser, subparsers)."""
    parser = argparse.ArgumentParser(
        prog=f"placedock {name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if subcommands is None:
        return parser
    return parser, parser.add_subparsers(dest=subcommands, required=True)


def usage():
    width = max(map(len, COMMANDS))
    lines = ["usage: placedock COMMAND [ARGS...]   (placedock COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def command(name):
    """The module of command NAME; KeyError if there is none."""
    return importlib.import_module(COMMANDS[name][0])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"placedock: no command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return command(argv[0]).main(argv[1:])
