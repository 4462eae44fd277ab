"""A write whose commit happened but whose answer was lost (the database's
connection closed in the commit: a failover, a restart) answers 503, and what
it committed stays whole: its consumer is kept, its allocations are listed and
add up to the provider's usages (placement/outage.py, keep_allocated_consumers).

Run in the placement image, against placement's own code and placedock's
(tests/in_image/lost_commit.py): when to close a connection in a commit cannot
be chosen from outside. Seen once in the galera env before the fix: a PUT's
connection closed when the front door moved back to the rejoined node, and the
provider's usages stayed 4 VCPU above its listed allocations.
"""

import json
import pathlib

from placedock.stack import compose as stack

PROBE = pathlib.Path(__file__).parent / "in_image" / "lost_commit.py"


def test_a_write_whose_answer_was_lost_keeps_its_consumer_and_stays_listed():
    out = stack.docker(
        "run", "--rm", "-e", "OS_API__AUTH_STRATEGY=noauth2", "-e", "PYTHONPATH=/usr/local/lib/placedock",
        "-v", f"{PROBE}:/probe/lost_commit.py:ro",
        "--entrypoint", "python3", stack.image("placement"), "/probe/lost_commit.py",
    )  # fmt: skip
    found = json.loads(out.splitlines()[-1])
    for method, seen in found.items():
        print(f"lost commit: {method} /allocations: {seen}")
        assert seen["status"] == 503, seen
        # All of it, listed both ways, and counted once.
        assert [alloc["resources"] for alloc in seen["consumer"].values()] == [{"VCPU": 2}], seen
        assert [alloc["resources"] for alloc in seen["provider"].values()] == [{"VCPU": 2}], seen
        assert seen["usages"] == {"VCPU": 2}, seen
