"""Every placement replica count from 1 to 10 on the three test hosts: at each,
a broken image rolled back, a rolling update and a node drained, under a
reader through node-1's front door. About 15 minutes, so not part of `tox`:

    tox -e swarm-counts

At 1 replica a drain is a gap in service: swarm stops a drained node's tasks
before it starts their replacements (start-first is for updates only). The
test measures that gap and bounds it; from 2 replicas no GET may fail.
"""

import os
from collections import Counter

import pytest
from placedock.stack import compose as stack
from placedock.stack import swarm
from placedock.traffic.ledger import Traffic
from test_swarm import DB_NODE, PLACEMENT, READ_PATHS, placement_image, running, settled, update

# The gap of a drain at 1 replica: the replica's stop drain (3 s), then the
# new one's start until haproxy has it UP; the bound is about twice what the
# two take on the test hosts, so a busy machine does not fail it.
ONE_REPLICA_DRAIN_GAP = 15


@pytest.fixture(scope="module")
def images():
    return (
        placement_image("broken", 'ENTRYPOINT ["sh", "-c", "echo placedock: broken on purpose >&2; exit 1"]'),
        [placement_image(f"count{n}", f'LABEL org.opencontainers.image.revision="count{n}"') for n in (0, 1)],
    )


@pytest.fixture(scope="module")
def reads(admin_headers):
    with Traffic(os.environ["PLACEMENT_URL"], admin_headers, READ_PATHS, seconds=2400) as book:
        yield book


@pytest.mark.parametrize("count", range(1, 11))
def test_at_every_count_rollback_update_and_drain_converge(count, images, reads):
    broken, good = images
    failed_before, sent_before = len(reads.read_failures), reads.reads
    swarm.manager("service", "scale", "--detach", f"{PLACEMENT}={count}")
    scaled = stack.wait_until(lambda: settled(count), timeout=180, step=0.5, what=f"{count} UP")
    before = sorted(running())
    rollback, rolled_back = update(broken, timeout=400)
    after_rollback = sorted(running())
    took, outcome = update(good[count % 2], timeout=600)
    stack.wait_until(lambda: settled(count), timeout=120, step=0.5, what=f"{count} UP after the update")
    updated = Counter(node for _, node, _, _ in running())
    victim = next((node for node in sorted(updated) if node != DB_NODE), "node-2")
    failed_mid = len(reads.read_failures)
    swarm.manager("node", "update", "--availability", "drain", victim)
    try:
        drained = stack.wait_until(lambda: settled(count, avoid=victim), timeout=180, step=0.5, what="drained")
    finally:
        swarm.manager("node", "update", "--availability", "active", victim)
    moved = Counter(node for _, node, _, _ in running())
    before_drain = reads.read_failures[failed_before:failed_mid]
    in_drain = [moment for moment, _, _ in reads.read_failures[failed_mid:]]
    gap = (max(in_drain) - min(in_drain)) if in_drain else 0.0
    print(
        f"{count} replicas: up in {scaled:.1f}s as {dict(updated)}; broken image {rolled_back} in {rollback:.1f}s; "
        f"update {outcome} in {took:.1f}s; {victim} drained in {drained:.1f}s, now {dict(moved)}; "
        f"{reads.reads - sent_before} GETs, {len(before_drain)} failed before the drain, {len(in_drain)} during it "
        f"(within {gap:.1f}s)"
    )
    assert rolled_back == "rollback_completed" and after_rollback == before
    assert outcome == "completed"
    assert victim not in moved and sum(moved.values()) == count
    assert before_drain == [], before_drain[:3]
    if count == 1:
        assert gap <= ONE_REPLICA_DRAIN_GAP
    else:
        assert in_drain == [], reads.read_failures[failed_mid:][:3]
