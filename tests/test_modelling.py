"""The modelling playground (placedock modelling) against the stack's front door,
and against the standalone sqlite image for one scenario:

- every shipped scenario loads, and each of its queries returns exactly the
  candidates its file states (worked out by hand);
- loading again changes no generation of any provider or consumer;
- `draw` writes an SVG with one node per provider and a PNG;
- bad files are refused with FILE:LINE: FIELD and nothing is created;
- `--reset` replaces an earlier load of the same scenario and nothing else.
"""

import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
import yaml
from placedock.api.client import Client, wait_ready
from placedock.commands.modelling import apply, query, spec
from placedock.stack import compose as stack

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "modelling").glob("*.yaml"))
TOOL = [sys.executable, "-m", "placedock", "modelling"]


def run(*args, url):
    return subprocess.run(
        [*TOOL, *map(str, args), "--url", url], capture_output=True, text=True, timeout=120, check=False
    )


def client(url):
    return Client(url, {"x-auth-token": "admin", "openstack-api-version": "placement 1.39"})


def generations(url, scenario):
    """{provider or consumer name: generation} of a loaded scenario."""
    api = client(url)
    out = {}
    for name in scenario.providers:
        out[name] = api.call("GET", f"/resource_providers/{scenario.provider_uuid(name)}")["generation"]
    for name in scenario.consumers:
        out[f"consumer {name}"] = api.call("GET", f"/allocations/{scenario.uuid('consumer', name)}")[
            "consumer_generation"
        ]
    return out


def copy_of(tmp_path, path, name, edit=lambda data: None):
    """A copy of a shipped scenario under another name (its own UUIDs and provider names)."""
    data = yaml.safe_load(path.read_text())
    data["name"] = name
    renamed = {rp["name"]: f"{name}-{rp['name']}" for rp in data["providers"]}
    for rp in data["providers"]:
        rp["name"] = renamed[rp["name"]]
        if "parent" in rp:
            rp["parent"] = renamed[rp["parent"]]
    for consumer in data.get("consumers", []):
        consumer["allocations"] = {renamed[k]: v for k, v in consumer["allocations"].items()}
    for q in data.get("queries", []):
        q["expect"] = [{renamed[k]: v for k, v in c.items()} for c in q.get("expect") or []]
        for key, value in q["request"].items():
            if key.startswith("in_tree"):
                q["request"][key] = renamed[value]
    edit(data)
    out = tmp_path / f"{name}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def loaded(placement_url):
    """Every shipped scenario loaded into the stack: {path: Scenario}."""
    out = {}
    for path in SHIPPED:
        result = run("apply", path, url=placement_url)
        assert result.returncode == 0, result.stderr
        out[path] = spec.read(path)
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_query_returns_the_candidates_its_file_states(path, loaded, placement_url):
    scenario = loaded[path]
    assert scenario.queries, "a shipped scenario teaches through its queries"
    runner = query.Runner(client(placement_url), scenario)
    for name, q in scenario.queries.items():
        assert q["expect"] is not None, f"{name}: a shipped query states its expectation"
        result = runner.run(name)
        assert not result.error, f"{name}: {result.error}"
        assert result.matches, "\n".join(result.lines())
        if not q["expect"]:
            assert result.why_empty, f"{name}: an empty answer is explained"
    cli = run("query", path, url=placement_url)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.rstrip().endswith(f"{len(scenario.queries)} as expected, 0 not")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_loading_again_changes_no_generation(path, loaded, placement_url):
    before = generations(placement_url, loaded[path])
    result = run("apply", path, url=placement_url)
    assert result.returncode == 0, result.stderr
    assert "already loaded, nothing changed" in result.stdout
    assert generations(placement_url, loaded[path]) == before


def test_an_expectation_that_does_not_hold_fails_the_query(tmp_path, placement_url):
    def wrong(data):
        data["queries"][0]["expect"] = data["queries"][0]["expect"][:-1] or [data["queries"][1]["expect"][0]]

    path = copy_of(tmp_path, ROOT / "modelling" / "numa-host.yaml", f"wrong-{uuid.uuid4().hex[:6]}", wrong)
    assert run("apply", path, url=placement_url).returncode == 0
    try:
        result = run("query", path, url=placement_url)
        assert result.returncode == 1
        assert "NOT as expected" in result.stdout and "returned, not expected" in result.stdout
    finally:
        assert run("apply", path, "--reset", url=placement_url).returncode == 0


def svg_nodes(path):
    """The titles of an SVG's graph nodes: Graphviz writes the node id there."""
    ns = {"svg": "http://www.w3.org/2000/svg"}
    tree = ET.parse(path)  # noqa: S314 (the SVG is the one our own `dot` just wrote)
    return {
        g.find("svg:title", ns).text for g in tree.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "node"
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_draw_gives_one_svg_node_per_provider_and_a_png(path, loaded, placement_url, tmp_path):
    assert shutil.which("dot"), "Graphviz's dot is needed (apt-get install graphviz)"
    scenario = loaded[path]
    first = next(iter(scenario.queries))
    result = run("draw", path, "--query", first, "--output", tmp_path / scenario.name, url=placement_url)
    if not scenario.queries[first]["expect"]:
        assert result.returncode == 2 and "no #1" in result.stderr
        result = run("draw", path, "--output", tmp_path / scenario.name, url=placement_url)
    assert result.returncode == 0, result.stderr
    assert svg_nodes(tmp_path / f"{scenario.name}.svg") == set(scenario.providers)
    png = (tmp_path / f"{scenario.name}.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


BAD = {
    "unknown parent": (
        "name: bad-{id}\nproviders:\n  - name: bad-{id}-a\n  - name: bad-{id}-b\n    parent: nowhere\n",
        ":5: providers[1].parent: unknown parent 'nowhere'",
    ),
    "unknown resource class": (
        "name: bad-{id}\nproviders:\n  - name: bad-{id}-a\n    inventories:\n      VCPU: 4\n      CUSTOM_FPGA: 1\n",
        ":6: providers[0].inventories.CUSTOM_FPGA: unknown resource class CUSTOM_FPGA",
    ),
    "bad YAML": (
        "name: bad-{id}\nproviders:\n  - name: bad-{id}-a\n    inventories: {{VCPU: 4\n",
        ":5: not valid YAML",
    ),
    "schema": (
        "name: bad-{id}\nproviders:\n  - name: bad-{id}-a\n    inventories:\n      VCPU: {{total: 0}}\n",
        ":5: providers[0].inventories.VCPU: ",
    ),
    "over capacity": (
        "name: bad-{id}\nproviders:\n  - name: bad-{id}-a\n    inventories: {{VCPU: 4}}\n"
        "consumers:\n  - name: vm\n    allocations:\n      bad-{id}-a: {{VCPU: 5}}\n",
        ":8: consumers[0].allocations.bad-{id}-a.VCPU: ",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_a_bad_file_is_refused_with_file_line_and_field_and_nothing_created(case, tmp_path, placement_url):
    unique = uuid.uuid4().hex[:6]
    text, message = BAD[case]
    path = tmp_path / f"{case.replace(' ', '-')}.yaml"
    path.write_text(text.format(id=unique))
    result = run("apply", path, url=placement_url)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}{message.format(id=unique)}"), result.stderr
    assert "Traceback" not in result.stderr
    api = client(placement_url)
    assert api.call("GET", "/resource_providers", params={"name": f"bad-{unique}-a"})["resource_providers"] == []
    assert api.request("GET", f"/traits/CUSTOM_PLACEDOCK_SCENARIO_BAD_{unique.upper()}").status_code == 404


def test_a_name_placement_already_has_refuses_the_whole_load(provider, tmp_path, placement_url):
    unique = f"clash-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "clash.yaml"
    path.write_text(f"name: {unique}\nproviders:\n  - name: {unique}-a\n  - name: {provider['name']}\n")
    result = run("apply", path, url=placement_url)
    assert result.returncode == 2
    assert f"{path}:4: providers.{provider['name']}: placement already has a provider" in result.stderr
    api = client(placement_url)
    assert api.call("GET", "/resource_providers", params={"name": f"{unique}-a"})["resource_providers"] == []


def test_reset_replaces_an_earlier_load_of_the_same_scenario_only(tmp_path, loaded, placement_url):
    name = f"reset-{uuid.uuid4().hex[:6]}"
    first = copy_of(tmp_path, ROOT / "modelling" / "shared-storage.yaml", name)
    assert run("apply", first, url=placement_url).returncode == 0
    others = {path: generations(placement_url, s) for path, s in loaded.items()}

    def without_cn3(data):
        data["providers"] = [rp for rp in data["providers"] if not rp["name"].endswith("ss-cn3")]
        data["consumers"], data["queries"] = [], []

    second = copy_of(tmp_path, ROOT / "modelling" / "shared-storage.yaml", name, without_cn3)
    kept = run("apply", second, url=placement_url)
    assert kept.returncode == 0, kept.stderr
    assert f"left from an earlier load, not in the file: {name}-ss-cn3" in kept.stdout
    api = client(placement_url)
    loader = apply.Loader(api, spec.read(second))
    assert f"{name}-ss-cn3" in {rp["name"] for rp in loader.loaded_trees().values()}

    reset = run("apply", second, "--reset", url=placement_url)
    assert reset.returncode == 0, reset.stderr
    assert f"{name}: reset: 4 providers and 1 consumers" in reset.stdout
    assert sorted(rp["name"] for rp in loader.loaded_trees().values()) == sorted(spec.read(second).providers)
    assert {path: generations(placement_url, s) for path, s in loaded.items()} == others
    assert run("apply", second, "--reset", url=placement_url).returncode == 0
    loader.reset()
    assert loader.loaded_trees() == {}


@pytest.fixture(scope="module")
def standalone():
    """The placement image alone: noauth, its own sqlite database, a loopback port."""
    cid = stack.docker(
        "run", "-d", "--rm", "-p", "127.0.0.1::8778", "-e", "OS_API__AUTH_STRATEGY=noauth2", "-e", "DB_SYNC=True",
        stack.image("placement"),
    )  # fmt: skip
    try:
        url = "http://" + stack.docker("port", cid, "8778/tcp").splitlines()[0]
        wait_ready(url, 60)
        yield url
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def test_a_scenario_in_the_standalone_sqlite_image(standalone):
    path = ROOT / "modelling" / "numa-host.yaml"
    # A fresh placement: not loaded yet, and nothing for --reset to remove.
    before_load = run("query", path, url=standalone)
    assert before_load.returncode == 2
    assert before_load.stderr.startswith(f"{path}: not loaded at {standalone}"), before_load.stderr
    first = run("apply", path, "--reset", url=standalone)
    assert first.returncode == 0, first.stderr
    assert "reset: 0 providers and 0 consumers" in first.stdout
    scenario = spec.read(path)
    before = generations(standalone, scenario)
    assert "nothing changed" in run("apply", path, url=standalone).stdout
    assert generations(standalone, scenario) == before
    result = run("query", path, url=standalone)
    assert result.returncode == 0, result.stdout + result.stderr
    assert requests.get(f"{standalone}/resource_providers", headers={"x-auth-token": "admin"}, timeout=10).json()[
        "resource_providers"
    ], "the providers are in the container's own database"
