"""Any placement release, and the rolling-upgrade rehearsal (tools/upgrade.py).

A release that cannot be built stops the build with one line naming it; the
rehearsal 15.0.0 -> 16.0.0 (3 replicas, a small data set, load throughout)
passes every check within 4 minutes. Own compose project: placedock-upgrade."""

import re
import time

import pytest
import stack
from upgrade import dataset, rehearsal

RELEASES = stack.ROOT / "placement" / "releases"
PREVIOUS = "15.0.0"


def test_the_default_release_is_the_same_everywhere_and_pinned():
    default = stack.default_release()
    in_compose = set(re.findall(r"\$\{PLACEMENT_VERSION:-([^}]+)\}", (stack.ROOT / "compose.yaml").read_text()))
    assert in_compose == {default}
    assert f"openstack-placement=={default}" in (RELEASES / f"{default}.txt").read_text().splitlines()


@pytest.mark.parametrize("path", sorted(RELEASES.glob("*.txt")), ids=lambda p: p.stem)
def test_each_release_file_pins_its_release_and_only_exact_versions(path):
    pins = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert f"openstack-placement=={path.stem}" in pins
    assert [line for line in pins if not re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line)] == []


@pytest.mark.parametrize(
    "version, why",
    [
        ("99.0.0", "openstack-placement 99.0.0 is not on the package index"),
        ("latest", "PLACEMENT_VERSION='latest' is not a release number"),
        # On PyPI, but its dependencies are not pinned here.
        ("2.0.0", "openstack-placement 2.0.0 has no pinned dependencies here (placement/releases/2.0.0.txt)"),
    ],
)
def test_a_release_that_cannot_be_built_stops_the_build_with_one_line(version, why):
    build = stack.Stack("noauth", rehearsal.PROJECT, PLACEMENT_VERSION=version)
    done = build.compose("build", "placement", check=False, capture=True)
    assert done.returncode != 0
    # BuildKit echoes a failing step's output, prefixed; the message is one line.
    said = {
        line[line.index("placedock: ") :] for line in (done.stdout + done.stderr).splitlines() if "placedock: " in line
    }
    assert len(said) == 1, said
    assert why in said.pop()
    assert stack.docker("images", "-q", stack.image("placement", version)) == ""


def test_differences_names_what_changed():
    """The comparison the rehearsal relies on does see a change."""
    before = {"providers": {"a": {"generation": 3, "traits": ["X"]}}, "custom traits": ["CUSTOM_A"]}
    after = {"providers": {"a": {"generation": 4, "traits": ["X"]}}, "custom traits": []}
    found, count = dataset.differences(before, after)
    assert count == 2
    assert found == ["providers a: generation differ", "custom traits: ['CUSTOM_A'] -> []"]
    assert dataset.differences(before, before) == ([], 0)


@pytest.mark.parametrize(
    "old, new, says",
    [
        ("15.0.0", "16.0.0", "2026.1 -> 2026.2, adjacent series: supported"),
        ("13.0.1", "15.0.0", "2025.1 -> 2026.1, SLURP to SLURP (skip-level): supported"),
        ("14.0.0", "16.0.0", "2025.2 -> 2026.2, skipping a series, not SLURP to SLURP: not supported upstream"),
        ("16.0.0", "16.0.1", "2026.2 -> 2026.2, a point release: supported"),
    ],
)
def test_the_report_says_whether_upstream_supports_the_path(old, new, says):
    assert rehearsal.upgrade_path(old, new) == says


def test_rolling_upgrade_from_the_previous_release_under_load_loses_nothing():
    started = time.monotonic()
    report = rehearsal.rehearse(PREVIOUS, stack.default_release(), replicas=3, nodes=6)
    elapsed = time.monotonic() - started
    print(report.format())
    failed = [(name, detail) for name, passed, detail in report.checks if not passed]
    assert failed == []
    assert len(report.checks) == 9
    # Traffic went on through every step: reads and acknowledged writes.
    assert report.requests["GET 200"] > 100
    assert report.requests["PUT 204"] > 10
    assert [name for name, _, _ in report.phases if name.startswith("replace ")] == [
        f"replace placement-{n}" for n in (1, 2, 3)
    ]
    assert elapsed < 240, f"the rehearsal took {elapsed:.0f}s; it is bounded at 4 minutes"
    assert stack.Stack("noauth", rehearsal.PROJECT).container_ids(all_states=True) == []
