"""Images that are ours: never pulled from a hub under our names.

Every mode's compose configuration (noauth or keystone, one mariadb or Galera,
with or without compose.src.yaml): a service that builds one of our images has
`pull_policy: build`, every other service of ours `never`, and `docker compose
pull` skips them all (placedock/* on Docker Hub may be anyone's).
"""

import itertools
import json

import pytest
import stack

# Every combination of the mode files merged over compose.yaml.
MODES = list(itertools.product(stack.MODES, stack.DATABASES, ((), ("compose.src.yaml",))))


def mode_id(value):
    mode, database, extra = value
    return "-".join([mode, database, *(name.split(".")[1] for name in extra)])


@pytest.fixture(params=MODES, ids=mode_id)
def mode_stack(request):
    mode, database, extra = request.param
    # compose.src.yaml needs a tree; the checkout stands in for one here.
    return stack.Stack(mode, database=database, extra=extra, project="placedock-images", PLACEMENT_SRC=str(stack.ROOT))


def test_our_images_are_built_or_never_pulled(mode_stack):
    config = json.loads(mode_stack.compose("config", "--format", "json", capture=True).stdout)
    prefix = stack.image("x").split("/")[0] + "/"
    wrong = {}
    for name, service in config["services"].items():
        policy = service.get("pull_policy")
        assert service["image"].startswith(prefix), f"{name} runs {service['image']}, not one of our images"
        expected = "build" if "build" in service else "never"
        if policy != expected:
            wrong[name] = f"pull_policy {policy}, expected {expected}"
    assert not wrong


def test_compose_pull_pulls_nothing(mode_stack):
    done = mode_stack.compose("--dry-run", "pull", capture=True, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Pulling" not in output, output
