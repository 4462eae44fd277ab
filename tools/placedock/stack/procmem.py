"""The memory of processes, from /proc: RSS, PSS and USS.

Used on the host for the benchmark's raw reference (bench/raw.py), and inside
a placement container by stack.uwsgi_memory(), which runs this file's source
there with python3: it imports nothing but the standard library.
"""

import json
import os


def process_memory(pid, role):
    """One process: role, threads, RSS, PSS and USS (Private_Clean +
    Private_Dirty: the pages no other process maps) in KiB; None if it is gone."""
    fields = {}
    try:
        for name in ("status", "smaps_rollup"):
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    fields.setdefault(key, value.split())
    except OSError:
        return None
    return {
        "pid": pid,
        "role": role,
        "threads": int(fields["Threads"][0]),
        "rss_kib": int(fields["VmRSS"][0]),
        "pss_kib": int(fields["Pss"][0]),
        "uss_kib": int(fields["Private_Clean"][0]) + int(fields["Private_Dirty"][0]),
    }


def uwsgi_processes():
    """In a placement container: every uwsgi process. The master is the uwsgi
    whose parent is not one (the entrypoint's shell stays PID 1 to drain
    first, placement/entrypoint.sh; a command run by hand is PID 1 itself);
    the others are its workers."""
    commands, parents = {}, {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                commands[pid] = os.path.basename(f.read().split(b"\0")[0].decode())
            with open(f"/proc/{pid}/stat") as f:
                parents[pid] = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    out = []
    for pid in sorted(p for p, command in commands.items() if command == "uwsgi" and p in parents):
        row = process_memory(pid, "worker" if commands.get(parents[pid]) == "uwsgi" else "master")
        if row:
            out.append(row)
    return out


if __name__ == "__main__":
    print(json.dumps(uwsgi_processes()))
