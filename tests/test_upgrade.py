"""Any placement release, and the rolling-upgrade rehearsal (placedock upgrade).

A release that cannot be built stops the build with one line naming it; the
rehearsal 15.0.0 -> 16.0.0 (3 replicas, a small data set, load throughout)
passes every check within 4 minutes, on mariadb and on PostgreSQL. Own compose project: placedock-upgrade.
The release rules and the data set's load order are checked without a stack
in tests/unit/test_releases.py."""

import time

import pytest
from placedock.commands.upgrade import rehearsal
from placedock.stack import compose as stack

RELEASES = stack.ROOT / "placement" / "releases"
PREVIOUS = "15.0.0"


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


@pytest.mark.parametrize("database", ["mariadb", "postgres"])
def test_rolling_upgrade_from_the_previous_release_under_load_loses_nothing(database):
    started = time.monotonic()
    report = rehearsal.rehearse(PREVIOUS, stack.placement_release(), replicas=3, nodes=6, database=database)
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
    assert stack.Stack("noauth", rehearsal.PROJECT, database=database).container_ids(all_states=True) == []
    assert f"on {database}," in report.format().splitlines()[0]
