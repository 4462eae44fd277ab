"""`ab` (Debian's apache2-utils) against a front door, as the original
placedock loaded its autoscaler: a process to start, and its report read back.

ab counts an answer whose length differs from the first one as a failure, so
the path it asks for must answer the same bytes every time: the standard CPU
traits, a list that does not change and costs a replica real work."""

import re
import shutil
import subprocess

PATH = "/traits?name=startswith:HW_CPU"


def start(url, headers, seconds, concurrency, path=PATH):
    """ab for `seconds` at `concurrency`; its process, report on stdout."""
    if not shutil.which("ab"):
        raise FileNotFoundError("ab is not installed: apt-get install apache2-utils (.ci/run does)")
    flags = [flag for name, value in headers.items() for flag in ("-H", f"{name}: {value}")]
    return subprocess.Popen(
        ["ab", "-q", "-t", str(seconds), "-n", "10000000", "-c", str(concurrency), *flags, url + path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def figures(report):
    """{Complete requests, Failed requests, Non-2xx responses} of ab's report
    (ab prints no Non-2xx line when there were none); {} without a report."""
    found = {}
    for name in ("Complete requests", "Failed requests", "Non-2xx responses"):
        match = re.search(rf"^{name}:\s+(\d+)", report, re.MULTILINE)
        if match:
            found[name] = int(match.group(1))
    if found:
        found.setdefault("Non-2xx responses", 0)
    return found
