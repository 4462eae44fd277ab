"""Run the gabbi API scenarios in gabbits/ against a running placement.

Environment:
  PLACEMENT_URL           placement endpoint (default http://127.0.0.1:8778)
  PLACEDOCK_AUTH_MODE     noauth (default) or keystone; gabbits/api always
                          runs, plus gabbits/<mode> when that directory exists
  PLACEMENT_TOKEN         admin token (default "admin" in noauth mode)
  PLACEMENT_MEMBER_TOKEN  non-admin token (default "demo" in noauth mode)
  PLACEMENT_SERVICE_TOKEN placement's service user (keystone mode only)

Every run gets a fresh PLACEDOCK_RUN (12 lowercase hex chars) and
PLACEDOCK_RUN_UPPER, which the scenarios use to name what they create, so
the suite can be re-run against a database that already holds data.

    PLACEMENT_URL=http://127.0.0.1:18778 python -m pytest tests/test_gabbits.py
"""

import os
import pathlib
import uuid

from gabbi import driver
from gabbi.driver import test_pytest  # imported so pytest collects it here

GABBITS = pathlib.Path(__file__).resolve().parent.parent / "gabbits"
MODES = ("noauth", "keystone")
TOKEN_VARS = ("PLACEMENT_TOKEN", "PLACEMENT_MEMBER_TOKEN")
NOAUTH_TOKENS = {"PLACEMENT_TOKEN": "admin", "PLACEMENT_MEMBER_TOKEN": "demo"}

URL = os.environ.get("PLACEMENT_URL", "http://127.0.0.1:8778")
MODE = os.environ.get("PLACEDOCK_AUTH_MODE", "noauth")

if MODE not in MODES:
    raise RuntimeError(f"PLACEDOCK_AUTH_MODE must be one of {MODES}, not {MODE!r}")
if MODE == "noauth":
    for name, default in NOAUTH_TOKENS.items():
        os.environ.setdefault(name, default)
# keystone/reshaper.yaml also needs placement's service user.
required = TOKEN_VARS + (("PLACEMENT_SERVICE_TOKEN",) if MODE == "keystone" else ())
missing = [name for name in required if not os.environ.get(name)]
if missing:
    raise RuntimeError(f"PLACEDOCK_AUTH_MODE={MODE} needs {' and '.join(missing)} set in the environment")

RUN = uuid.uuid4().hex[:12]
os.environ["PLACEDOCK_RUN"] = RUN
os.environ["PLACEDOCK_RUN_UPPER"] = RUN.upper()


class _Collector:
    """Stands in for pytest's metafunc so that gabbi can be asked for the
    tests of several directories, which are then parametrized at once."""

    def __init__(self, metafunc):
        self.function = test_pytest
        self.config = metafunc.config
        self.args, self.ids = [], []

    def parametrize(self, argnames, argvalues, ids):
        self.args.extend(argvalues)
        self.ids.extend(ids)


def pytest_generate_tests(metafunc):
    collector = _Collector(metafunc)
    for name in ("api", MODE):
        test_dir = GABBITS / name
        if name == "api" or test_dir.is_dir():
            driver.py_test_generator(
                str(test_dir),
                url=URL,
                test_loader_name=name,
                metafunc=collector,
                # gabbi builds one client per test; loading the CA bundle for
                # each costs seconds and is pointless over plain http.
                cert_validate=URL.startswith("https:"),
            )
    metafunc.parametrize("test, result", collector.args, ids=collector.ids)
