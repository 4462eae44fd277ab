"""placedock autoscale on a compose stack (tox -e autoscale: noauth, one replica,
compose.autoscale.yaml's 1/4 CPU per replica): the original placedock's
playground, `ab` against the front door, run by the same command a user runs,
with the HPA's windows and periods shortened by --speed (the same code path).

The live test prints the run's timeline figures; its CSV and PNG are kept under
PLACEDOCK_LOG_DIR (tox: .tox/autoscale/logs)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from placedock.stack import compose as stack
from placedock.stack.compose import wait_until
from placedock.traffic import ab
from placedock.traffic.ledger import Traffic, unbalanced, vcpu_providers

AUTOSCALE = [sys.executable, "-m", "placedock", "autoscale"]
# 10x: sync every 3 s (not 1.5: a CPU sample over a longer window is steadier),
# scale-up 2 replicas per 3 s, scale-down after 30 s, 1 replica per 6 s.
FAST = ["--speed", "10", "--sync-period", "3"]
LOAD_SECONDS = 45


@pytest.fixture
def keep_dir(tmp_path):
    where = Path(os.environ.get("PLACEDOCK_LOG_DIR") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def replicas(compose_stack):
    return len(compose_stack.container_ids("placement"))


def read_timeline(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("t", "cpu_mean_m", "requests_per_s", "p95_ms"):
            row[key] = float(row[key]) if row[key] else None
        for key in ("replicas", "ready", "sampled", "desired", "errors_5xx"):
            row[key] = int(row[key])
    return rows


def test_one_replica_grows_under_ab_and_shrinks_back_with_no_failed_request(
    compose_stack, placement_url, admin_headers, keep_dir
):
    assert replicas(compose_stack) == 1, "tox -e autoscale starts the stack at 1 replica"
    csv_path, png_path = keep_dir / "autoscale.csv", keep_dir / "autoscale.png"
    scaler = subprocess.Popen(
        [*AUTOSCALE, "--project", compose_stack.project, *FAST, "--csv", csv_path, "--png", png_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    providers = vcpu_providers(placement_url, admin_headers, "autoscale")
    read_paths = (
        "/",
        "/resource_providers?name=autoscale-none",
        *(f"/resource_providers/{rp}/usages" for rp in providers),
    )
    try:
        # Light, so that at rest one replica is enough again (each worker waits 1.5 s between requests).
        with Traffic(placement_url, admin_headers, read_paths, providers, writers=2, seconds=400, pause=1.5) as book:
            time.sleep(6)  # two quiet syncs first: the timeline starts at rest
            started = time.monotonic()
            load = ab.start(placement_url, admin_headers, LOAD_SECONDS, concurrency=4)
            grew = wait_until(lambda: replicas(compose_stack) >= 3, timeout=60, step=0.5, what="3 replicas")
            out, _ = load.communicate(timeout=LOAD_SECONDS + 60)
            load_ended = time.monotonic()
            peak = replicas(compose_stack)
            # The window (30 s), then one replica per 6 s, each stop drained first.
            shrank = wait_until(lambda: replicas(compose_stack) == 1, timeout=200, step=0.5, what="back to 1")
            stack.wait_for_up(1, timeout=30)
            time.sleep(2)
    finally:
        scaler.send_signal(signal.SIGTERM)
        log, _ = scaler.communicate(timeout=60)
        (keep_dir / "autoscale.log").write_text(log)
    figures = ab.figures(out)
    rows = read_timeline(csv_path)
    loaded = [r for r in rows if r["requests_per_s"] and r["requests_per_s"] > 50]
    target = 125.0  # 50 % of 250m
    first = max(loaded[:3], key=lambda r: r["cpu_mean_m"])  # at 1 to 3 replicas, as the load began
    last = loaded[-3:]
    settled = sum(r["cpu_mean_m"] for r in last) / len(last)
    print(
        f"\nautoscale: >= 3 replicas {grew:.1f}s after the load began "
        f"(compose found them), peak {max(r['replicas'] for r in rows)} replicas ({peak} when ab ended), back to 1 "
        f"{shrank:.1f}s after it ended; per-replica CPU {first['cpu_mean_m']:.0f}m at the start of the load, "
        f"{settled:.0f}m at its end (target {target:.0f}m); ab: {figures}; 5xx at the front door "
        f"{sum(r['errors_5xx'] for r in rows)}; traffic: {book.summary()}; timeline {csv_path}, {png_path}"
    )
    print("\n".join(line for line in log.splitlines() if "scaled" in line))
    assert scaler.returncode == 0, log[-2000:]
    assert grew < 60
    assert png_path.stat().st_size > 10_000
    # Per-replica CPU fell toward the target as replicas came.
    assert first["cpu_mean_m"] > target * 1.5, first
    assert abs(settled - target) < abs(first["cpu_mean_m"] - target), (first, last)
    # Nothing failed: ab's requests, the readers and writers, the front door's log.
    assert figures["Complete requests"] > 1000 and figures["Failed requests"] == 0, out
    assert figures["Non-2xx responses"] == 0, out
    assert sum(r["errors_5xx"] for r in rows) == 0
    assert book.read_failures == [], book.read_failures[:5]
    assert (book.in_doubt, book.refused) == ([], {}), (book.in_doubt[:5], book.refused)
    assert book.outcomes["acknowledged"] > 20
    assert book.verify(placement_url, admin_headers) == []
    assert unbalanced(placement_url, admin_headers, providers) == []
    assert load_ended - started >= LOAD_SECONDS - 1


def bad_hpa(tmp_path, old, new):
    manifest = (stack.ROOT / "kubernetes" / "base" / "placement.yaml").read_text()
    assert old in manifest
    path = tmp_path / "placement.yaml"
    path.write_text(manifest.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (
            "    - type: Resource\n      resource:\n        name: cpu\n        target:\n          type: Utilization\n"
            "          averageUtilization: 50\n",
            "    - type: External\n      external:\n        metric:\n          name: queue_depth\n        target:\n"
            "          type: AverageValue\n          averageValue: 30\n",
            "a External metric cannot be read here",
        ),
        (
            "        name: cpu\n        target:\n",
            "        name: memory\n        target:\n",
            "target memory Utilization",
        ),
        ("  maxReplicas: 10\n", "  maxReplicas: 12\n", "more than haproxy's 10 server slots"),
    ],
)
def test_an_hpa_it_cannot_honour_is_refused_in_one_line_and_nothing_changes(compose_stack, tmp_path, old, new, words):
    before = sorted(compose_stack.container_ids("placement"))
    path = bad_hpa(tmp_path, old, new)
    done = subprocess.run(
        [*AUTOSCALE, "--project", compose_stack.project, *FAST, "--hpa", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert words in done.stderr and str(path) in done.stderr
    assert sorted(compose_stack.container_ids("placement")) == before


def test_a_project_that_is_not_up_is_refused_in_one_line():
    done = subprocess.run([*AUTOSCALE, "--project", "placedock-nothing-here"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "autoscale: no compose project placedock-nothing-here is up (docker compose ls lists those that are); "
        "bring it up first (docs/autoscale.md)"
    )
