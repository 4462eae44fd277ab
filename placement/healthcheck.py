"""Container health: the unauthenticated version document answers 200."""

import sys
import urllib.request

try:
    with urllib.request.urlopen("http://127.0.0.1:8778/", timeout=2) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
    print(f"unhealthy: {exc}")
    sys.exit(1)
