"""kubernetes/: every overlay renders and validates, and it is the compose stack.

No cluster runs here, so this checks what can be checked without one: the
schemas of every Kubernetes release from kube.MIN_KUBERNETES on (kube.py),
and that each pod gets what its compose service gets: the same image, the
same environment (from the same env/*.env), the same command, ports, probes
and user, and the original placedock's autoscaler. The placement image's
init container (placement/schemawait.py) runs for real, in docker.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from placedock.stack import kube

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = {
    "noauth": ["compose.yaml"],
    "keystone": ["compose.yaml", "compose.keystone.yaml"],
}
# compose service -> the pod containers that stand for it.
WORKLOADS = {
    "placement": [("Deployment", "placement", "placement"), ("Deployment", "placement", "wait-for-schema")],
    "placement-db-sync": [("Job", "placement-db-sync", "db-sync")],
    "mariadb": [("StatefulSet", "mariadb", "mariadb")],
    "memcached": [("Deployment", "memcached", "memcached")],
    "keystone-init": [("StatefulSet", "keystone", "keystone-init")],
    "keystone": [("StatefulSet", "keystone", "keystone")],
    "keystone-register": [("Job", "keystone-register", "keystone-register")],
}
# Under compose haproxy is the front door; on Kubernetes the Service is.
NOT_MAPPED = {"haproxy"}
FRONT_DOOR = {"http://haproxy:8778": "http://placement:8778"}
# What only Kubernetes sets: nothing orders pods there, so the waits are longer.
WAIT = {"DB_WAIT_TIMEOUT": "300"}
WAITING = {"wait-for-schema", "db-sync", "keystone-init"}


def rendered(overlay):
    return kube.render(kube.TREE / "overlays" / overlay)


@pytest.fixture(scope="module", params=kube.overlays())
def overlay(request):
    return request.param, rendered(request.param)


@pytest.fixture(scope="module", params=sorted(COMPOSE_FILES))
def mode(request):
    """A mode both stacks have: its overlay's objects and compose's services."""
    return request.param, rendered(request.param), compose_services(request.param)


def compose_services(mode):
    """`docker compose config` of a mode, with every default (no PLACEDOCK_*, no ports)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLACEDOCK_", "COMPOSE_", "PLACEMENT_"))}
    env = {k: v for k, v in env.items() if not k.endswith("_PORT")}
    files = [arg for name in COMPOSE_FILES[mode] for arg in ("-f", str(ROOT / name))]
    out = subprocess.run(
        ["docker", "compose", *files, "config", "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)["services"]


def find(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in the render"
    return found[0]


def workloads(objects):
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")]


def pod(workload):
    return workload["spec"]["template"]["spec"]


def containers(workload):
    spec = pod(workload)
    return spec.get("initContainers", []) + spec["containers"]


def container(objects, kind, name, container_name):
    by_name = {c["name"]: c for c in containers(find(objects, kind, name))}
    assert container_name in by_name, f"{kind}/{name} has no container {container_name}"
    return by_name[container_name]


def source(env_from):
    """The kind and name an envFrom entry names."""
    if "configMapRef" in env_from:
        return "ConfigMap", env_from["configMapRef"]["name"]
    return "Secret", env_from["secretRef"]["name"]


def data(obj):
    """A ConfigMap's or Secret's values, as text."""
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
    return obj["data"]


def environment(objects, c):
    """What a container's environment is: envFrom in order, then env, later wins."""
    env = {}
    for env_from in c.get("envFrom", []):
        env.update(data(find(objects, *source(env_from))))
    for var in c.get("env", []):
        assert "value" in var, f"{c['name']}: {var['name']} has no plain value"
        env[var["name"]] = var["value"]
    return env


def env_file(path):
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def dockerfile(image_service):
    return (ROOT / image_service["build"]["dockerfile"]).read_text()


def builder(services, image):
    """The compose service that builds an image (one per image, see compose.yaml)."""
    (service,) = [s for s in services.values() if s.get("image") == image and "build" in s]
    return service


def quantity(value):
    """A Kubernetes quantity as a number: 250m -> 0.25, 256Mi -> 268435456."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|Ki|Mi|Gi|)", str(value))
    assert match, f"{value!r} is not a quantity"
    return float(match[1]) * units[match[2]]


# -- rendering and validation -------------------------------------------------


def test_every_overlay_renders_and_validates_against_every_release(overlay):
    name, objects = overlay
    assert {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "Job"} <= {o["kind"] for o in objects}
    assert kube.validate(objects) == []
    assert kube.versions()[0] == f"{kube.MIN_KUBERNETES}.0"


def broken_tree(tmp_path, edit):
    """A copy of kubernetes/ and env/ with one file edited."""
    for part in ("kubernetes", "env"):
        shutil.copytree(ROOT / part, tmp_path / part)
    path, old, new = edit
    text = (tmp_path / path).read_text()
    assert old in text
    (tmp_path / path).write_text(text.replace(old, new, 1))
    return tmp_path / "kubernetes"


def check_command(*args):
    return subprocess.run(
        [sys.executable, "-m", "placedock", "kube", "check", *args], capture_output=True, text=True, check=False
    )


def test_check_fails_on_an_hpa_api_version_that_no_current_release_serves(tmp_path):
    tree = broken_tree(
        tmp_path,
        ("kubernetes/base/placement.yaml", "apiVersion: autoscaling/v2\n", "apiVersion: autoscaling/v2beta2\n"),
    )
    result = check_command("--tree", str(tree), "noauth")
    assert result.returncode == 1, result.stdout
    assert (
        f"kube: noauth: HorizontalPodAutoscaler/placement (autoscaling/v2beta2): Kubernetes {kube.MIN_KUBERNETES}.0"
        " serves no such kind and API version" in result.stdout
    )
    assert "noauth: 12 objects" in result.stdout and "problem(s)" in result.stdout


def test_check_fails_on_a_misspelt_field(tmp_path):
    tree = broken_tree(tmp_path, ("kubernetes/base/placement.yaml", "readinessProbe:", "readinesProbe:"))
    result = check_command("--tree", str(tree), "noauth")
    assert result.returncode == 1, result.stdout
    assert "'readinesProbe' was unexpected" in result.stdout


def test_check_fails_on_an_overlay_that_does_not_render(tmp_path):
    tree = broken_tree(
        tmp_path, ("kubernetes/overlays/keystone/kustomization.yaml", "keystone-register.yaml", "missing.yaml")
    )
    result = check_command("--tree", str(tree))
    assert result.returncode == 1, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if "keystone" in line and "failed" in line]
    assert "kustomize build failed" in line and "missing.yaml" in line
    assert "kube: noauth: 12 objects" in result.stdout


# -- the same stack as compose ------------------------------------------------


def test_every_compose_service_has_its_pods(mode):
    name, objects, services = mode
    assert set(services) - NOT_MAPPED == {s for s in WORKLOADS if s in services}
    for service in set(services) - NOT_MAPPED:
        for kind, workload, container_name in WORKLOADS[service]:
            container(objects, kind, workload, container_name)


def test_no_drift_every_container_gets_the_environment_compose_gives_its_service(mode):
    name, objects, services = mode
    for service in set(services) - NOT_MAPPED:
        want = {k: FRONT_DOOR.get(v, v) for k, v in (services[service].get("environment") or {}).items()}
        for kind, workload, container_name in WORKLOADS[service]:
            got = environment(objects, container(objects, kind, workload, container_name))
            if container_name in WAITING:
                assert {k: got.pop(k, None) for k in WAIT} == WAIT, container_name
            assert got == want, f"{name}: {kind}/{workload} {container_name} vs compose's {service}"


def test_no_drift_config_maps_and_secrets_hold_the_env_files(mode):
    name, objects, services = mode
    kustomization = yaml.safe_load((ROOT / "env" / "kustomization.yaml").read_text())
    generators = [("ConfigMap", g) for g in kustomization["configMapGenerator"]]
    generators += [("Secret", g) for g in kustomization["secretGenerator"]]
    present = 0
    for kind, generator in generators:
        (path,) = generator["envs"]
        found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(generator["name"] + "-")]
        if not found:
            continue
        present += 1
        assert data(found[0]) == env_file(ROOT / "env" / path), f"{name}: {kind} {generator['name']} vs env/{path}"
    assert present == {"noauth": 2, "keystone": 6}[name]


def test_same_images_and_commands_as_compose(mode):
    name, objects, services = mode
    for service in set(services) - NOT_MAPPED:
        for kind, workload, container_name in WORKLOADS[service]:
            c = container(objects, kind, workload, container_name)
            assert c["image"] == services[service]["image"], f"{workload}/{container_name}"
            assert c["imagePullPolicy"] == "IfNotPresent"
            assert "command" not in c, f"{container_name}: the image's entrypoint runs, as under compose"
            if container_name != "wait-for-schema":
                assert c.get("args") == services[service].get("command"), f"{container_name}: compose's command"
    assert container(objects, "Deployment", "placement", "wait-for-schema")["args"] == [
        "python3",
        "/usr/local/lib/placedock/schemawait.py",
    ]


def test_ports_are_the_images_and_the_front_doors(mode):
    name, objects, services = mode
    for service in set(services) - NOT_MAPPED:
        exposed = set(
            re.findall(
                r"\d+", re.search(r"^EXPOSE (.*)$", dockerfile(builder(services, services[service]["image"])), re.M)[1]
            )
        )
        for kind, workload, container_name in WORKLOADS[service]:
            for port in container(objects, kind, workload, container_name).get("ports", []):
                assert str(port["containerPort"]) in exposed, f"{container_name}: {port}"
    # The placement Service is the front door compose publishes from haproxy
    # (and keystone's, keystone's): same port.
    published = {s: {p["target"] for p in services[s].get("ports", [])} for s in services}
    assert find(objects, "Service", "placement")["spec"]["ports"][0]["port"] in published["haproxy"]
    if "keystone" in services:
        assert find(objects, "Service", "keystone")["spec"]["ports"][0]["port"] in published["keystone"]


def test_every_service_selects_pods_and_names_their_ports(overlay):
    name, objects = overlay
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        pods = [
            w for w in workloads(objects) if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"Service/{service['metadata']['name']} selects no pod"
        names = {p["name"] for w in pods for c in pod(w)["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"Service/{service['metadata']['name']}: {port}"


def test_every_config_map_and_secret_a_pod_names_is_rendered(overlay):
    name, objects = overlay
    external = {"placement-database"} if name == "external-database" else set()
    for workload in workloads(objects):
        for c in containers(workload):
            for env_from in c.get("envFrom", []):
                kind, ref = source(env_from)
                if ref not in external:
                    find(objects, kind, ref)


def test_probes_ask_what_the_compose_healthchecks_ask(overlay):
    name, objects = overlay
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/[^\"']*)", (ROOT / "placement" / "healthcheck.py").read_text())
    placement = container(objects, "Deployment", "placement", "placement")
    ports = {p["name"]: p["containerPort"] for p in placement["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = placement[probe]["httpGet"]
        assert (str(ports[get["port"]]), get["path"]) == (url[1], url[2]), probe
    if name != "external-database":
        healthcheck = json.loads(re.search(r"CMD (\[.*\])", (ROOT / "mariadb" / "Dockerfile").read_text())[1])
        mariadb = container(objects, "StatefulSet", "mariadb", "mariadb")
        assert mariadb["startupProbe"]["exec"]["command"] == healthcheck
        assert mariadb["readinessProbe"]["exec"]["command"] == healthcheck
    if name == "keystone":
        path = re.search(r"http://127\.0\.0\.1:5000(/\w+)", (ROOT / "keystone" / "Dockerfile").read_text())[1]
        keystone = container(objects, "StatefulSet", "keystone", "keystone")
        assert {keystone[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {path}


def test_the_autoscaler_is_the_original_on_autoscaling_v2(overlay):
    name, objects = overlay
    hpa = find(objects, "HorizontalPodAutoscaler", "placement")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    deployment = find(objects, target["kind"], target["name"])
    assert (target["apiVersion"], deployment["apiVersion"]) == ("apps/v1", "apps/v1")
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 50}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    resources = container(objects, "Deployment", "placement", "placement")["resources"]
    # One replica may use 1/4 CPU; 50 % of the request is 1/8 CPU, as in the original.
    assert quantity(resources["requests"]["cpu"]) == quantity(resources["limits"]["cpu"]) == 0.25


def test_placement_memory_covers_the_measured_replica(overlay):
    """A replica is uwsgi's master and its workers: the request holds the
    largest total PSS measured in the benchmark (docs/benchmark.json)."""
    name, objects = overlay
    bench = json.loads((ROOT / "docs" / "benchmark.json").read_text())
    replicas = [*bench["memory_stack"].values(), *bench["memory_after_throughput"].values()]
    largest = max(sum(p["pss_kib"] for p in processes) for processes in replicas) * 1024
    workers = int(re.search(r"UWSGI_PROCESSES=(\d+)", (ROOT / "placement" / "Dockerfile").read_text())[1])
    assert all(sum(p["role"] == "worker" for p in processes) == workers for processes in replicas)
    resources = container(objects, "Deployment", "placement", "placement")["resources"]
    assert largest <= quantity(resources["requests"]["memory"]) < quantity(resources["limits"]["memory"])


def test_the_disruption_budget_covers_placement_and_never_blocks_a_drain(overlay):
    name, objects = overlay
    pdb = find(objects, "PodDisruptionBudget", "placement")
    labels = find(objects, "Deployment", "placement")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"] == {**pdb["spec"], "maxUnavailable": 1}
    assert "minAvailable" not in pdb["spec"]


# -- security -----------------------------------------------------------------


def image_ids(image):
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", image], capture_output=True, text=True, check=True
    ).stdout
    return tuple(int(x) for x in re.match(r"uid=(\d+)\S* gid=(\d+)", out).groups())


def test_every_pod_is_restricted_and_runs_as_its_images_user(overlay):
    name, objects = overlay
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        namespace["metadata"]["name"]
    }
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "placedock" for o in objects)
    ids = {}
    for workload in workloads(objects):
        spec = pod(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & spec.keys(), where
        assert all("hostPath" not in v for v in spec.get("volumes", [])), where
        for c in containers(workload):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert not c["securityContext"].get("privileged"), c["name"]
            if c["image"] not in ids:
                ids[c["image"]] = image_ids(c["image"])
            assert (context["runAsUser"], context["runAsGroup"]) == ids[c["image"]], f"{where} {c['name']}"
            assert context["runAsUser"] != 0
        if spec.get("volumes") or workload["spec"].get("volumeClaimTemplates"):
            assert context.get("fsGroup") == context["runAsGroup"], f"{where}: its volume is its group's"


# -- the variants -------------------------------------------------------------


def test_noauth_carries_no_keystone_object():
    objects = rendered("noauth")
    assert not [o["metadata"]["name"] for o in objects if "keystone" in o["metadata"]["name"]]


def test_external_database_has_no_mariadb_and_no_database_password():
    objects = rendered("external-database")
    assert not [o for o in objects if o["metadata"]["name"].startswith("mariadb")]
    assert not [o for o in objects if o["kind"] == "Secret"]
    for kind, workload, container_name in WORKLOADS["placement"] + WORKLOADS["placement-db-sync"]:
        refs = [source(env_from) for env_from in container(objects, kind, workload, container_name)["envFrom"]]
        assert [ref for ref_kind, ref in refs if ref_kind == "Secret"] == ["placement-database"], container_name


def test_external_database_on_postgresql_gives_every_placement_container_the_secrets_url(tmp_path):
    """The original placedock's case: noauth2 on an external PostgreSQL,
    migrated at start. A kustomization of the user's own adds the Secret the
    component names, as `kubectl create secret` does (docs/kubernetes.md);
    the Job that migrates, the init container that waits for its schema and
    placement all connect with its URL, and the whole validates."""
    url = "postgresql+psycopg2://placement:placement-dev-password@postgres.example/placement"
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "placedock",
        # Relative: kustomize 4.5.4 takes no absolute path to a directory.
        "resources": [os.path.relpath(kube.TREE / "overlays" / "external-database", tmp_path)],
        "generatorOptions": {"disableNameSuffixHash": True},
        "secretGenerator": [
            {"name": "placement-database", "literals": [f"OS_PLACEMENT_DATABASE__CONNECTION={url}"]},
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    objects = kube.render(tmp_path)
    assert kube.validate(objects) == []
    assert not [o for o in objects if "mariadb" in o["metadata"]["name"]]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == ["placement-database"]
    for kind, workload, container_name in WORKLOADS["placement"] + WORKLOADS["placement-db-sync"]:
        c = container(objects, kind, workload, container_name)
        refs = [source(env_from) for env_from in c["envFrom"]]
        assert [ref for ref_kind, ref in refs if ref_kind == "Secret"] == ["placement-database"], container_name
        assert environment(objects, c).get("OS_PLACEMENT_DATABASE__CONNECTION") == url, container_name


# -- the init container, for real ---------------------------------------------


def schemawait(image, script=""):
    """Run the init container's command (after `script`) on a new sqlite database."""
    command = f"{script} python3 /usr/local/lib/placedock/schemawait.py"
    return subprocess.run(
        ["docker", "run", "--rm", "-e", "DB_WAIT_TIMEOUT=2", "--entrypoint", "sh", image, "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def placement_image():
    return container(rendered("noauth"), "Deployment", "placement", "wait-for-schema")["image"]


def test_init_container_waits_then_fails_with_one_line_without_a_schema(placement_image):
    result = schemawait(placement_image)
    assert result.returncode == 1
    *waits, last = result.stderr.strip().splitlines()
    assert waits and all("waiting for the schema" in line for line in waits)
    assert last.startswith("placedock: OS_PLACEMENT_DATABASE__CONNECTION: ")
    assert "no schema yet" in last and "DB_WAIT_TIMEOUT" in last and "placement-db-sync" in last


def test_init_container_passes_once_migrated(placement_image):
    result = schemawait(placement_image, "placement-manage db sync &&")
    assert result.returncode == 0, result.stderr
    assert re.search(r"placedock: schema at \w+: ready$", result.stderr.strip())


def test_init_container_passes_on_a_newer_release_schema(placement_image):
    """A rolling upgrade: the new release migrated; an old pod that restarts still starts."""
    newer = (
        "python3 -c \"import sqlite3; c = sqlite3.connect('/var/lib/placement/placement.sqlite');"
        ' c.execute(\\"UPDATE alembic_version SET version_num = \'f00dfeedbeef\'\\"); c.commit()" &&'
    )
    result = schemawait(placement_image, f"placement-manage db sync && {newer}")
    assert result.returncode == 0, result.stderr
    assert "schema at f00dfeedbeef, newer than this image's" in result.stderr
