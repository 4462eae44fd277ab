"""The rules the release and upgrade tooling relies on, with no stack: the
default release is pinned everywhere, each release file pins exact versions,
the rehearsal's data-set comparison sees a change, its report says whether
upstream supports a path, and the data set is loaded in an order MariaDB
cannot deadlock on."""

import re
import threading
import time

import pytest
from placedock.commands.upgrade import dataset, rehearsal
from placedock.stack import compose as stack

RELEASES = stack.ROOT / "placement" / "releases"


def test_the_default_release_is_the_same_everywhere_and_pinned():
    """compose.yaml's default (what the tools use, through `compose config`) is
    the Dockerfile's (what a plain `docker build` uses)."""
    in_compose = set(re.findall(r"\$\{PLACEMENT_VERSION:-([^}]+)\}", (stack.ROOT / "compose.yaml").read_text()))
    in_dockerfile = set(
        re.findall(r"^ARG PLACEMENT_VERSION=(\S+)$", (stack.ROOT / "placement" / "Dockerfile").read_text(), re.M)
    )
    assert len(in_compose) == 1 and in_dockerfile == in_compose, (in_compose, in_dockerfile)
    (default,) = in_compose
    assert f"openstack-placement=={default}" in (RELEASES / f"{default}.txt").read_text().splitlines()


@pytest.mark.parametrize("path", sorted(RELEASES.glob("*.txt")), ids=lambda p: p.stem)
def test_each_release_file_pins_its_release_and_only_exact_versions(path):
    pins = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert f"openstack-placement=={path.stem}" in pins
    assert [line for line in pins if not re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line)] == []


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


@pytest.mark.parametrize("nodes", [1, 2, 3, 6])
def test_the_node_naming_every_aggregate_is_loaded_alone_before_any_other(nodes, monkeypatch):
    """The first association of an aggregate inserts it; two at once can
    deadlock in MariaDB (a 500 from placement 15.0.0 in CI). So no other node
    starts before the node that names every aggregate has finished."""
    events, lock = [], threading.Lock()

    def load_node(client, index):
        with lock:
            events.append(("start", index))
        time.sleep(0.02)
        with lock:
            events.append(("end", index))
        return [f"rp{index}"], [f"c{index}"]

    monkeypatch.setattr(dataset, "Client", lambda *args: type("Fake", (), {"call": lambda *a, **k: None})())
    monkeypatch.setattr(dataset, "_load_node", load_node)
    loaded = dataset.load("http://unused", nodes)

    first = min(nodes, len(dataset.AGGREGATES)) - 1
    assert first % 3 + 1 == min(nodes, len(dataset.AGGREGATES)), "the first node names every aggregate used"
    assert events[:2] == [("start", first), ("end", first)], events
    assert loaded == {"providers": [f"rp{i}" for i in range(nodes)], "consumers": [f"c{i}" for i in range(nodes)]}
