"""Assemble a root filesystem from Debian packages installed in this stage.

    python3 rootfs.py make DEST [--without PKG,...] [--pick PKG=NAME,...] [--also PATH ...] PACKAGE...
    python3 rootfs.py check DEST

A final image built FROM scratch with DEST copied in holds the named packages
and everything they depend on (Depends and Pre-Depends, followed through
alternatives and virtual packages), and nothing else: no apt, no dpkg, no
perl, none of the base image's tools nobody runs. It is what an image's
programs need to run, not a system to install more into.

--without   packages whose dependencies are not followed and whose files are
            not copied, beyond those that serve package management (dpkg,
            debconf, perl-base, init-system-helpers, adduser), which a package
            may name but never runs once installed, and which are always left out.
--pick      copy only these programs of a package (coreutils=cat,env: its
            /usr/bin/cat and /usr/bin/env), for the few a script runs.
--also      files this stage made, not any package's (/etc/nsswitch.conf...);
            the loader's cache, /etc/ld.so.cache, always comes along, and the
            links update-alternatives made (awk -> gawk, mariadb's
            /etc/mysql/my.cnf) when what they name was copied.
--user      a user (and its group) this stage has, as this stage has them: a
            package's postinst made it, or the Dockerfile did. /etc/passwd
            and /etc/group hold root, nobody and these users only.

What Debian writes for documentation and translations (/usr/share/doc,
man, info, locale, lintian) and glibc's character set converters (gconv,
8 MB; Python has its own codecs) are left out. DEST/var/lib/dpkg/status
lists the packages copied, with their versions, so image scanners see them;
/usr/share/placedock/packages.txt lists them for people.

/tmp and /var/tmp (1777), /run and /root are made; docker makes /dev,
/proc and /sys when a container starts. One line says what it copied.

check: every program and library under DEST finds the libraries it links
there (DEST's own dynamic loader lists them, in a chroot), and every script
its #! interpreter, or it stops with one line per one missing.
"""

import argparse
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

# Package management: named by packages, run only when they are installed.
PACKAGE_MANAGEMENT = {"dpkg", "debconf", "perl-base", "init-system-helpers", "adduser"}

LEFT_OUT = (
    "/usr/share/doc/",
    "/usr/share/man/",
    "/usr/share/info/",
    "/usr/share/locale/",
    "/usr/share/lintian/",
    "/usr/share/bug/",
    "/usr/share/doc-base/",
    "/usr/share/bash-completion/",
    "/usr/lib/x86_64-linux-gnu/gconv/",
    "/usr/lib/aarch64-linux-gnu/gconv/",
)


def query(*args):
    return subprocess.run(["dpkg-query", *args], check=True, capture_output=True, text=True).stdout


def installed():
    """{package: its dependency groups}, and {virtual package: its providers}."""
    fields = "${Package}\t${Provides}\t${Pre-Depends}, ${Depends}\n"
    depends, providers = {}, {}
    for line in query("-W", "-f", fields).splitlines():
        package, provides, needs = line.split("\t")
        depends[package] = [
            [bare(alternative) for alternative in group.split("|")] for group in needs.split(",") if group.strip()
        ]
        for virtual in filter(None, (bare(p) for p in provides.split(","))):
            providers.setdefault(virtual, []).append(package)
    return depends, providers


def bare(relation):
    """'libc6:any (>= 2.34)' -> 'libc6'."""
    return re.split(r"[\s:(]", relation.strip(), maxsplit=1)[0]


def closure(roots, without, depends, providers):
    """The roots and what they depend on, in a stable order."""
    wanted, todo = [], list(roots)
    while todo:
        package = todo.pop(0)
        if package in wanted or package in without:
            continue
        if package not in depends:
            sys.exit(f"rootfs: {package} is not installed in this stage: install it first")
        wanted.append(package)
        for group in depends[package]:
            choices = [p for name in group for p in ([name] if name in depends else providers.get(name, []))]
            if any(choice in without for choice in group + choices):
                continue
            if not choices:
                sys.exit(f"rootfs: {package} depends on {' | '.join(group)}, and none is installed")
            todo.append(choices[0])
    return wanted


def copy(path, dest):
    """Copy one path of the running system to the same place under dest, through
    merged /usr's links (/bin -> usr/bin): the copy lands where the file is, with
    its mode, times and owner."""
    source = Path(os.path.realpath(os.path.dirname(path))) / os.path.basename(path)
    if not os.path.lexists(source):
        return 0
    target = Path(dest + str(source))
    size = 0
    if source.is_dir() and not source.is_symlink():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copystat(source, target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            return 0
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
            size = source.stat().st_size
    owner = source.lstat()
    os.lchown(target, owner.st_uid, owner.st_gid)
    if not source.is_symlink():  # chown clears setuid and setgid: the mode again, after it
        os.chmod(target, stat.S_IMODE(owner.st_mode))
    return size


def update_alternatives(*args):
    return subprocess.run(["update-alternatives", *args], check=True, capture_output=True, text=True).stdout


def alternatives(dest):
    """The links of update-alternatives' choices that point at a file under dest."""
    links = []
    for line in update_alternatives("--get-selections").splitlines():
        name = line.split()[0]
        fields = dict(re.findall(r"^(Link|Value): (\S+)$", update_alternatives("--query", name), re.M))
        if "Value" in fields and os.path.lexists(dest + fields["Value"]):
            links += [fields["Link"], f"/etc/alternatives/{name}"]
    return links


def accounts(dest, users):
    """dest's /etc/passwd and /etc/group: these users, and their groups, as here."""
    passwd = {line.split(":")[0]: line for line in Path("/etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[2]: line for line in Path("/etc/group").read_text().splitlines()}
    missing = [user for user in users if user not in passwd]
    if missing:
        sys.exit(f"rootfs: no user {', '.join(missing)} in this stage: make it first")
    gids = dict.fromkeys(passwd[user].split(":")[3] for user in users)
    Path(dest, "etc").mkdir(parents=True, exist_ok=True)
    Path(dest, "etc/passwd").write_text("".join(passwd[user] + "\n" for user in users))
    Path(dest, "etc/group").write_text("".join(groups[gid] + "\n" for gid in gids if gid in groups))


LOADER = "/lib64/ld-linux-x86-64.so.2"


def check(dest):
    """Stop if a program or library under dest links one that is not there, or a
    script names an interpreter that is not there."""
    missing, elves, scripts = [], 0, {}
    for path in Path(dest).rglob("*"):
        if path.is_symlink() or not path.is_file() or path.is_relative_to(Path(dest, "proc")):
            continue
        inside = "/" + str(path.relative_to(dest))
        with path.open("rb") as file:
            head = file.read(256)
        # The standard library's modules are imported, not run by their #! (cgi.py's names /usr/local/bin/python).
        if head.startswith(b"#!") and os.access(path, os.X_OK) and not inside.startswith("/usr/lib/python3"):
            scripts[inside] = head[2:].split(b"\n")[0].decode(errors="replace").split()
        if not head.startswith(b"\x7fELF"):
            continue
        elves += 1
        listed = subprocess.run(["chroot", dest, LOADER, "--list", inside], capture_output=True, text=True)
        lines = listed.stdout.splitlines()
        missing += [f"{inside}: {line.split()[0]} not found" for line in lines if "not found" in line]
    missing += missing_interpreters(dest, scripts)
    if missing:
        sys.exit("rootfs: " + "\nrootfs: ".join(missing))
    print(f"rootfs: each of {elves} programs and libraries finds what it links, each of {len(scripts)} scripts its #!")


def missing_interpreters(dest, scripts):
    """'SCRIPT: INTERPRETER not found' for each script whose #! names what dest
    lacks (`#!/usr/bin/env perl`: perl on PATH). Looked up in a child chrooted
    into dest, so that its absolute links resolve there."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        os.chroot(dest)
        lines = []
        for script, words in scripts.items():
            names = words[:1] if not words or os.path.basename(words[0]) != "env" else words[1:2]
            for name in names:
                found = os.path.exists(name) if name.startswith("/") else shutil.which(name, path="/usr/bin:/bin")
                if not found:
                    lines.append(f"{script}: {name} not found")
        os.write(write, "\n".join(lines).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        found = pipe.read()
    os.waitpid(child, 0)
    return found.splitlines()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check").add_argument("dest")
    make = commands.add_parser("make")
    make.add_argument("dest")
    make.add_argument("packages", nargs="+")
    make.add_argument("--without", default="", type=lambda v: set(filter(None, v.split(","))))
    make.add_argument("--pick", action="append", default=[])
    make.add_argument("--also", action="append", default=[])
    make.add_argument("--user", action="append", default=[])
    args = parser.parse_args()
    if args.command == "check":
        return check(args.dest)

    picks = {}
    for pick in args.pick:
        package, _, names = pick.partition("=")
        picks[package] = set(names.split(","))
    depends, providers = installed()
    packages = closure(args.packages, args.without | PACKAGE_MANAGEMENT, depends, providers)

    dest = args.dest.rstrip("/")
    # Merged /usr: /bin, /lib... are links into /usr here, and stay so there.
    for top in sorted(Path("/").iterdir()):
        if top.is_symlink():
            Path(dest).mkdir(parents=True, exist_ok=True)
            link = Path(dest) / top.name
            if not link.is_symlink():
                os.symlink(os.readlink(top), link)
    size = 0
    for package in packages:
        for path in query("-L", package).splitlines():
            if not path.startswith("/") or path.startswith(LEFT_OUT) or path.rstrip("/") + "/" in LEFT_OUT:
                continue
            if package in picks and not os.path.isdir(path) and os.path.basename(path) not in picks[package]:
                continue
            size += copy(path, dest)
    for path in ["/etc/ld.so.cache", *args.also, *alternatives(dest)]:
        size += copy(path, dest)
    accounts(dest, ["root", "nobody", *args.user])
    for path, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("run", 0o755), ("root", 0o700)):
        Path(dest, path).mkdir(parents=True, exist_ok=True)
        os.chmod(Path(dest, path), mode)

    status = Path(dest, "var/lib/dpkg/status")
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text("\n".join(query("-s", package) for package in packages))
    listing = Path(dest, "usr/share/placedock/packages.txt")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(query("-W", "-f", "${binary:Package}=${Version}\n", *packages))
    print(f"rootfs: {len(packages)} packages, {size / 1e6:.1f} MB, into {dest}")


if __name__ == "__main__":
    main()
