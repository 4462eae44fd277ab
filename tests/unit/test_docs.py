"""The docs stay true: every Markdown page of the checkout (README.md, docs/,
modelling/README.md, gabbits/README.md, ...) is read as GitHub shows it, with
no Docker and no network, and

- every relative link and image resolves to a file of the checkout, and a
  `#anchor` to a heading of its target (GitHub's slugs);
- every command in a fenced block that can be checked here names what exists:
  `placedock ...` parses with that command's own parser, `tox -e/-m` names envs
  and labels of tox.ini (and `tox -e ENV -- ARGS` parses when ENV runs a
  placedock command with {posargs}), `docker compose -f FILE` and
  COMPOSE_FILE name compose files, `tools/...` and `.ci/...` are executable,
  `cd`/`cat`-style commands, `kubectl -k/-f` and `pip -c/-r/-e` name paths
  that exist;
- the README stays a front page: at most 250 lines.

How the docs write commands, so that they can be checked:
- a ```console block holds commands as `$ COMMAND` lines, and their output on
  the lines between (not checked); a ```sh, ```bash or ```shell block is
  commands only, `#` lines being comments; other blocks are not commands;
- a line ending in `\\` goes on on the next one;
- a placeholder is a word in capitals, alone or as a path's part (`NODE`,
  `MANAGER_IP`, `DIR/cli-plugins`); it stands for a value of the reader's, so
  a path holding one is not looked for, and a placedock argument that is one
  parses as `1`. Nothing else is elided in a command: no `...`, `…` or
  `<word>`, which would not run as written.
"""

import argparse
import configparser
import contextlib
import io
import os
import re
import shlex
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest
from placedock import cli

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250
SKIP_DIRS = {"__pycache__", "build", "node_modules"}

PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+\1")
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

SHELL_BLOCKS = {"sh", "bash", "shell"}
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"}
REDIRECTS = {">", ">>", "<", "<<", ">&", "<&", ">|", "&>"}
PATH_COMMANDS = {"cd", "cat", "less", "more", "head", "tail", "ls", "source", ".", "bash", "sh"}
TOX_SUBCOMMANDS = {"run", "r", "p", "run-parallel", "l", "list", "c", "config", "d", "depends", "devenv", "de"}
TOX_SUBCOMMANDS |= {"exec", "e", "legacy", "le", "quickstart", "q", "schema"}
COMPOSE_GLOBAL_VALUES = {"-p", "--project-name", "--profile", "--env-file", "--project-directory", "--ansi"}
COMPOSE_GLOBAL_VALUES |= {"--progress", "--parallel"}
COMPOSE_SUBCOMMANDS = {
    *("attach", "build", "commit", "config", "cp", "create", "down", "events", "exec", "export", "images"),
    *("kill", "logs", "ls", "pause", "port", "ps", "pull", "push", "restart", "rm", "run", "scale", "start"),
    *("stats", "stop", "top", "unpause", "up", "version", "volumes", "wait", "watch"),
}


def markdown_files():
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS and "egg-info" not in d)
        found += [Path(folder, name) for name in sorted(files) if name.endswith(".md")]
    return found


def rel(path):
    return path.relative_to(ROOT).as_posix()


# Markdown as GitHub reads it.


def split_markdown(text):
    """(prose lines with their numbers, fenced blocks as (language, first line number, lines))."""
    prose, blocks, fence = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = (opening.group(1), opening.group(2).lower(), number + 1, [])
        elif fence is not None and line.strip().startswith(fence[0][0] * len(fence[0])) and not line.strip("`~ "):
            blocks.append(fence[1:])
            fence = None
        elif fence is not None:
            fence[3].append(line)
        else:
            prose.append((number, line))
    return prose, blocks


def slug(heading):
    """GitHub's anchor for a heading's text: lowercase, punctuation dropped
    except '-' and '_', each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = (ch for ch in text if ch.isalnum() or ch in " -_" or unicodedata.category(ch).startswith("M"))
    return "".join(kept).replace(" ", "-")


def heading_anchors(text):
    """The anchors of a page's headings; a repeated one gets -1, -2, ..."""
    prose, _ = split_markdown(text)
    seen, found = {}, set()
    for _, line in prose:
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


def link_problems(path, text):
    prose, _ = split_markdown(text)
    problems = []
    for number, line in prose:
        line = CODE_SPAN.sub("", line)
        reference = REFERENCE.match(line)
        targets = LINK.findall(line) + ([reference.group(1)] if reference else [])
        for target in targets:
            if SCHEME.match(target) or target.startswith("//"):
                continue
            where = f"{rel(path)}:{number}: {target}"
            file_part, _, anchor = target.partition("#")
            goal = (path.parent / unquote(file_part)).resolve() if file_part else path
            if not goal.is_relative_to(ROOT) or not goal.exists():
                problems.append(f"{where}: no such file in the checkout")
            elif anchor and goal.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif anchor and anchor not in heading_anchors(text if goal == path else goal.read_text()):
                problems.append(f"{where}: no heading #{anchor} in {rel(goal)}")
    return problems


# Commands, as a shell would split them.


def commands_of(blocks):
    """(line number, command line) of every command in the fenced blocks."""
    found = []
    for language, first, lines in blocks:
        if language not in SHELL_BLOCKS | {"console"}:
            continue
        pending, start = None, None
        for number, line in enumerate(lines, first):
            if pending is None:
                if language == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                elif not line.strip() or line.lstrip().startswith("#"):
                    continue
                pending, start = "", number
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            found.append((start, pending + line))
            pending = None
        if pending is not None:
            found.append((start, pending))
    return found


def simple_commands(line):
    """Each simple command of a line as its words: $( ... ) as commands of
    their own (SUBST in their place), split at && || ; | &, redirections and
    comments dropped."""
    inner = SUBSTITUTION.findall(line)
    line = SUBSTITUTION.sub("SUBST", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words, current, skip = [], [], False
    for token in lexer:
        if skip:
            skip = False
        elif token in SEPARATORS:
            words.append(current)
            current = []
        elif token in REDIRECTS:
            skip = True
        else:
            current.append(token)
    words.append(current)
    for command in inner:
        words += simple_commands(command)
    return [each for each in words if each]


def is_placeholder(word):
    return bool(PLACEHOLDER.fullmatch(word))


def repo_path(word, cwd):
    """The checkout path a word names, or None when it names none here:
    absolute, home, a variable, an option, a URL, or holding a placeholder."""
    if not word or word[0] in "/~$-" or "://" in word or word in (".", ".."):
        return None if word not in (".", "..") else (cwd / word).resolve()
    if any(is_placeholder(part) for part in word.split("/") if part):
        return None
    return (cwd / word).resolve()


def tox_config():
    config = configparser.ConfigParser(interpolation=None, strict=False)
    config.read(ROOT / "tox.ini")
    envs = {name.split(":", 1)[1] for name in config.sections() if name.startswith("testenv:")}
    envs |= {env.strip() for env in config.get("tox", "env_list", fallback="").split(",") if env.strip()}
    labels = {}
    for line in config.get("tox", "labels", fallback="").splitlines():
        if "=" in line:
            label, _, members = line.partition("=")
            labels[label.strip()] = [member.strip() for member in members.split(",")]
    commands = {env: config.get(f"testenv:{env}", "commands", fallback="").strip() for env in envs}
    return envs, labels, commands


def unabbreviated(parser):
    """The parser and its subcommands' taking only whole option names: the
    docs spell each flag out (`--replica` would pass for `--replicas`)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for each in action.choices.values():
                unabbreviated(each)
    return parser


def placedock_problems(args):
    """Why `placedock ARGS` would not parse, or None."""
    if not args or args[0] in ("-h", "--help"):
        return None
    if args[0] not in cli.COMMANDS:
        return f"no placedock command {args[0]!r} (there are: {', '.join(cli.COMMANDS)})"
    argv = ["1" if is_placeholder(word) else word for word in args[1:]]
    parser = unabbreviated(cli.command(args[0]).build_parser())
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return f"placedock {args[0]} does not take {argv}: {said.getvalue().strip().splitlines()[-1]}"
    except argparse.ArgumentError as exc:
        return f"placedock {args[0]} does not take {argv}: {exc}"
    return None


def tox_problems(args):
    envs, labels, commands = tox_config()
    cut = args.index("--") if "--" in args else len(args)
    words, posargs = list(args[:cut]), args[cut + 1 :]
    problems, named = [], []
    if words and not words[0].startswith("-"):
        if words[0] not in TOX_SUBCOMMANDS:
            problems.append(f"no tox subcommand {words[0]!r}")
        words = words[1:]
    while words:
        word = words.pop(0)
        if word == "-e" or word.startswith("-e"):
            value = (words.pop(0) if words else "") if word == "-e" else word[2:].lstrip("=")
            named += [env for env in value.split(",") if env]
        elif word == "-m":
            while words and not words[0].startswith("-"):
                label = words.pop(0)
                if label not in labels:
                    problems.append(f"no tox label {label!r} in tox.ini (there are: {', '.join(sorted(labels))})")
    problems += [f"no tox env {env!r} in tox.ini" for env in named if env not in envs]
    if len(named) == 1 and named[0] in commands and posargs:
        runs = re.fullmatch(r"placedock (\w+) \{posargs(?::[^}]*)?\}", commands[named[0]])
        if runs:
            problem = placedock_problems([runs.group(1), *posargs])
            problems += [f"tox -e {named[0]} -- {' '.join(posargs)}: {problem}"] if problem else []
    return problems


def compose_problems(args, cwd):
    problems, words = [], list(args)
    while words:
        word = words.pop(0)
        if word in ("-f", "--file") or word.startswith("--file="):
            value = word.split("=", 1)[1] if "=" in word else (words.pop(0) if words else "")
            path = repo_path(value, cwd)
            if path is not None and not path.is_file():
                problems.append(f"docker compose -f {value}: no such file")
        elif word in COMPOSE_GLOBAL_VALUES:
            words = words[1:]
        elif not word.startswith("-"):
            if word not in COMPOSE_SUBCOMMANDS:
                problems.append(f"no docker compose subcommand {word!r}")
            break
    return problems


def command_problems(line):
    """Why a command line would not run as written here, as a list."""
    if "…" in line or "..." in line or re.search(r"<[a-z][\w-]*>", line):
        return ["an elision (… ... <word>) in a command: write a placeholder in capitals"]
    problems, cwd = [], ROOT
    for words in simple_commands(line):
        assignments = []
        while words and ASSIGNMENT.match(words[0]):
            assignments.append(words.pop(0))
        for assignment in assignments:
            name, _, value = assignment.partition("=")
            for file in value.split(":") if name == "COMPOSE_FILE" else ():
                path = repo_path(file, cwd)
                if path is not None and not path.is_file():
                    problems.append(f"COMPOSE_FILE names {file}: no such file")
        if not words:
            continue
        program, args = words[0], words[1:]
        if Path(program).name == "placedock":
            problem = placedock_problems(args)
            problems += [problem] if problem else []
        elif program == "tox":
            problems += tox_problems(args)
        elif program == "docker" and args[:1] == ["compose"]:
            problems += compose_problems(args[1:], cwd)
        elif program.startswith(("tools/", "./tools/", ".ci/", "./.ci/")):
            path = repo_path(program, cwd)
            if path is not None and not (path.is_file() and os.access(path, os.X_OK)):
                problems.append(f"{program}: no such executable in the checkout")
        elif program in PATH_COMMANDS:
            for word in args:
                path = repo_path(word, cwd)
                if path is not None and not path.exists():
                    problems.append(f"{program} {word}: no such path in the checkout")
                if program == "cd" and path is not None:
                    cwd = path
        elif program == "kubectl" or Path(program).name in ("pip", "pip3"):
            flags = ("-k", "-f", "--kustomize", "--filename") if program == "kubectl" else ("-c", "-r", "-e")
            for flag, value in zip(args, args[1:], strict=False):
                path = repo_path(value.split("[")[0], cwd) if flag in flags else None
                if path is not None and not path.exists():
                    problems.append(f"{program} {flag} {value}: no such path in the checkout")
    return problems


def page_problems(path, text):
    _, blocks = split_markdown(text)
    problems = link_problems(path, text)
    for number, line in commands_of(blocks):
        problems += [f"{rel(path)}:{number}: {line.strip()}: {problem}" for problem in command_problems(line)]
    return problems


PAGES = markdown_files()


def test_the_pages_are_found():
    names = {rel(page) for page in PAGES}
    assert {"README.md", "docs/hacking.md", "modelling/README.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_link_and_command_of_the_page_holds(page):
    assert page_problems(page, page.read_text()) == []


def test_the_readme_is_a_front_page():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail under docs/"


# The checks themselves can fail: each broken line below is caught.

BROKEN = {
    "a link to no file": "[x](docs/no-such-page.md)",
    "an anchor no heading makes": "[x](README.md#no-such-heading)",
    "an anchor into the same page": "[x](#nowhere)",
    "a placedock command": "```console\n$ placedock nosuch\n```",
    "a placedock flag": "```console\n$ placedock upgrade --from 15.0.0 --flag-nobody-has\n```",
    "a placedock flag cut short": "```console\n$ placedock upgrade --from 15.0.0 --replica 3\n```",
    "a release not pinned": "```console\n$ placedock upgrade --from 13.0.0\n```",
    "a placedock subcommand": "```sh\nplacedock modelling load modelling/numa-host.yaml\n```",
    "a tox env": "```console\n$ tox -e lint,no-such-env\n```",
    "a tox label": "```console\n$ tox p -m no-such-label\n```",
    "a tox env's posargs": "```console\n$ tox -e modelling -- load modelling/numa-host.yaml\n```",
    "a compose file": "```console\n$ docker compose -f compose.yaml -f compose.nosuch.yaml up -d\n```",
    "a COMPOSE_FILE": "```console\n$ COMPOSE_FILE=compose.yaml:compose.nosuch.yaml docker compose up\n```",
    "a tools/ script": "```console\n$ tools/no-such-script --version 1\n```",
    "a cd": "```sh\ncd kubernetes/overlays/nosuch && ls\n```",
    "a cat after a cd": "```sh\ncd kubernetes && cat overlays/noauth/nosuch.yaml\n```",
    "a continued line": "```console\n$ placedock swarm deploy \\\n    --no-such-flag\n```",
    "a command substitution": '```console\n$ eval "$(placedock testswarm nosuch)"\n```',
    "an elision": "```console\n$ docker compose ... logs galera-1\n```",
}


@pytest.mark.parametrize("text", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_line_is_caught(text):
    assert page_problems(ROOT / "README.md", text) != []


def test_what_is_written_as_the_docs_say_passes():
    text = "\n".join(
        [
            "# A heading, with `code` and punctuation!",
            "[x](#a-heading-with-code-and-punctuation) [y](docs/hacking.md#the-full-run) [z](https://example.org)",
            "```console",
            "$ PLACEDOCK_KEEP_STACK=1 tox -e noauth -- -k traits   # a comment",
            "output: $ not a command",
            "$ placedock swarm scale N && placedock swarm registry --address MANAGER_IP",
            "$ tools/install-compose --version 2.20.1 DIR/cli-plugins",
            "$ tox -e modelling -- apply modelling/numa-host.yaml --url http://127.0.0.1:8778",
            "```",
        ]
    )
    assert page_problems(ROOT / "README.md", text) == []
