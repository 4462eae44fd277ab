"""common/rootfs.py, which every image of the stack is built FROM scratch
with: which packages a root holds (the closure of their dependencies, through
alternatives and virtual packages, stopping at what serves package
management), a file's copy (its owner and mode kept, setuid too), and the
check that a root's scripts find their interpreter.
dpkg's own database is not needed: the dependencies are given."""

import importlib.util
import os
import stat
from pathlib import Path

import pytest
from placedock.stack.compose import ROOT

spec = importlib.util.spec_from_file_location("rootfs", ROOT / "common" / "rootfs.py")
rootfs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rootfs)

# {package: [[alternative, ...], ...]} as installed() reads them, and the virtual packages' providers.
DEPENDS = {
    "memcached": [["libc6"], ["libevent"], ["perl"], ["adduser"], ["lsb-base", "sysvinit-utils"]],
    "libc6": [["libgcc-s1"]],
    "libgcc-s1": [["libc6"], ["gcc-base"]],
    "gcc-base": [],
    "libevent": [["libc6"], ["libssl3", "libssl1"]],
    "libssl3": [["libc6"]],
    "perl": [["perl-base"]],
    "perl-base": [["dpkg"]],
    "dpkg": [],
    "adduser": [["passwd"], ["debconf", "debconf-2.0"]],
    "debconf": [],
    "passwd": [],
    "lsb-base": [],
    "sysvinit-utils": [],
    "python3": [["media-types", "mime-support"], ["libpython3-stdlib"]],
    "media-types": [],
    "libpython3-stdlib": [["libc6"]],
    "mawk": [],
}
PROVIDERS = {"awk": ["mawk"], "debconf-2.0": ["debconf"]}
WITHOUT = {"perl", "adduser", "dpkg", "debconf"}


def test_the_closure_follows_dependencies_once_each_and_stops_at_package_management():
    closure = rootfs.closure(["memcached"], WITHOUT, DEPENDS, PROVIDERS)
    assert closure == ["memcached", "libc6", "libevent", "lsb-base", "libgcc-s1", "libssl3", "gcc-base"]


def test_the_first_installed_alternative_is_taken():
    DEPENDS["tool"] = [["gawk", "awk"], ["mime-support", "media-types"]]
    try:
        assert rootfs.closure(["tool"], set(), DEPENDS, PROVIDERS) == ["tool", "mawk", "media-types"]
    finally:
        del DEPENDS["tool"]


def test_a_group_naming_a_package_left_out_is_not_followed():
    # debconf | debconf-2.0: debconf is left out, so its virtual package is not looked for.
    DEPENDS["tool"] = [["debconf-2.0"], ["awk"]]
    try:
        assert rootfs.closure(["tool"], {"debconf"}, DEPENDS, PROVIDERS) == ["tool", "mawk"]
    finally:
        del DEPENDS["tool"]


@pytest.mark.parametrize(
    "roots, message",
    [
        (["nginx"], "nginx is not installed in this stage"),
        (["broken"], "broken depends on libfoo | libbar, and none is installed"),
    ],
)
def test_what_cannot_be_found_stops_it_with_one_line(roots, message):
    DEPENDS["broken"] = [["libfoo", "libbar"]]
    try:
        with pytest.raises(SystemExit, match=message):
            rootfs.closure(roots, set(), DEPENDS, PROVIDERS)
    finally:
        del DEPENDS["broken"]


@pytest.mark.parametrize(
    "relation, package",
    [("libc6 (>= 2.34)", "libc6"), (" python3:any (>= 3.11~)", "python3"), ("libgcc-s1:amd64", "libgcc-s1")],
)
def test_a_relation_is_read_as_its_package(relation, package):
    assert rootfs.bare(relation) == package


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_a_script_whose_interpreter_the_root_lacks_is_named(tmp_path):
    def script(path, first_line):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{first_line}\necho hi\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "usr/bin/dash").write_bytes(b"")
    (tmp_path / "usr/bin/sh").symlink_to("/usr/bin/dash")  # absolute: it resolves inside the root only
    script(tmp_path / "usr/bin/fine", "#!/bin/sh -e")
    script(tmp_path / "usr/bin/tool", "#!/usr/bin/perl -w")
    script(tmp_path / "usr/bin/other", "#!/usr/bin/env python3")
    scripts = {
        "/usr/bin/fine": ["/bin/sh", "-e"],
        "/usr/bin/tool": ["/usr/bin/perl", "-w"],
        "/usr/bin/other": ["/usr/bin/env", "python3"],
    }
    assert sorted(rootfs.missing_interpreters(str(tmp_path), scripts)) == [
        "/usr/bin/other: python3 not found",
        "/usr/bin/tool: /usr/bin/perl not found",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_file_is_copied_with_its_owner_and_its_setuid_bit_and_a_link_as_a_link(tmp_path):
    source = tmp_path / "system" / "usr" / "bin"
    source.mkdir(parents=True)
    program = source / "tool"
    program.write_bytes(b"\x7fELF")
    os.chown(program, 100, 101)
    program.chmod(0o4755)
    (source / "alias").symlink_to("tool")
    dest = str(tmp_path / "root")
    assert rootfs.copy(str(program), dest) == 4
    assert rootfs.copy(str(source / "alias"), dest) == 0
    copied = Path(dest + str(program))
    assert (copied.stat().st_uid, copied.stat().st_gid, stat.S_IMODE(copied.stat().st_mode)) == (100, 101, 0o4755)
    assert os.readlink(Path(dest + str(source / "alias"))) == "tool"
