"""docs/benchmark.md and docs/benchmark.png from one run's results.

Every figure comes from the results of the run; the settings quoted in "Why
the defaults" are read from the repo's files at run time.
"""

import re

from placedock.commands.bench import raw

MIB = 2**20
MB = 10**6

# The goals the report shows next to the numbers (it reports them, never asserts).
GOAL_FRONT_DOOR_RATIO = 0.97
GOAL_RAW_SLOWDOWN = 1.05
GOAL_COLD_START_S = 15.0
GOAL_PLACEMENT_IMAGE_MB = 150.0
# What each worker beyond the first adds: its USS (the pages only it maps).
GOAL_WORKER_USS_MIB = 30.0


# --- the repo's settings ----------------------------------------------------------


def _ini_values(text):
    values = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*=\s*(.*?)\s*$", line)
        if match and not line.lstrip().startswith((";", "#")):
            values.setdefault(match.group(1), match.group(2))
    return values


def defaults(root):
    """The settings the report explains, read from the files that set them."""
    uwsgi = _ini_values((root / "placement" / "uwsgi.ini").read_text())
    placement_env = _ini_values((root / "env" / "placement.env").read_text())
    mariadb = _ini_values((root / "mariadb" / "placedock.cnf").read_text())
    haproxy = (root / "haproxy" / "haproxy.cfg").read_text()
    balance = re.search(r"^\s*balance\s+(\S+)", haproxy, re.M)
    slots = re.search(r"^\s*server-template\s+\S+\s+(\d+)", haproxy, re.M)
    maxconn = re.search(r"^\s*default-server\s.*\bmaxconn\s+(\d+)", haproxy, re.M)
    reuse = re.search(r"^\s*http-reuse\s+(\S+)", haproxy, re.M)
    processes, threads = raw.image_workers(root)
    return {
        "processes": processes,
        "threads": threads,
        "listen": uwsgi.get("listen"),
        "socket": "http11-socket" if "http11-socket" in uwsgi else "http-socket",
        "socket_timeout": uwsgi.get("socket-timeout"),
        "server_maxconn": int(maxconn.group(1)) if maxconn else 0,
        "http_reuse": reuse.group(1) if reuse else "safe",
        "pool": int(placement_env["OS_PLACEMENT_DATABASE__MAX_POOL_SIZE"]),
        "overflow": int(placement_env["OS_PLACEMENT_DATABASE__MAX_OVERFLOW"]),
        "pool_timeout": placement_env.get("OS_PLACEMENT_DATABASE__POOL_TIMEOUT"),
        "max_connections": int(mariadb["max_connections"]),
        "balance": balance.group(1) if balance else "unknown",
        "server_slots": int(slots.group(1)) if slots else 0,
    }


# --- derived figures -----------------------------------------------------------------


def _run(results, target, mix):
    for entry in results.get("throughput", []):
        if entry["target"] == target and entry["mix"] == mix:
            return entry
    return None


def _workers(memory_by_container):
    return [p for procs in memory_by_container.values() for p in procs if p["role"] == "worker"]


def _ms(seconds):
    return f"{seconds * 1000:.1f}"


def _ratio(a, b):
    return a / b if b else float("nan")


def _x(a, b):
    """a ÷ b as '1.23×', or 'n/a' when b is zero."""
    return f"{a / b:.2f}×" if b else "n/a"


def _placement_image(results):
    sizes = results.get("images", {})
    name = next((n for n in sizes if "/placement:" in n), None)
    return name, sizes.get(name)


def goals(results):
    """[(goal, measured text, met, margin text)] for every goal the run can speak to."""
    rows = []
    for mix in ("read", "write"):
        front, direct = _run(results, "front door N=1", mix), _run(results, "direct", mix)
        if front and direct:
            ratio = _ratio(front["rps"], direct["rps"])
            rows.append(
                (
                    f"front door N=1 ≥ {GOAL_FRONT_DOOR_RATIO:.2f}× direct ({mix} mix, req/s)",
                    f"{ratio:.2f}× ({front['rps']:.0f} vs {direct['rps']:.0f} req/s)",
                    ratio >= GOAL_FRONT_DOOR_RATIO,
                    f"{ratio - GOAL_FRONT_DOOR_RATIO:+.2f}×",
                )
            )
    stack, ref = results.get("perfload_stack"), results.get("perfload_raw")
    if stack and ref:
        pairs = [("perfload load time", stack["seconds"], ref["seconds"])]
        for query, entry in stack["allocation_candidates"].items():
            for quantile in ("p50", "p95"):
                pairs.append(
                    (
                        f"allocation candidates ({query}) {quantile}",
                        entry[quantile],
                        ref["allocation_candidates"][query][quantile],
                    )
                )
        for label, mine, theirs in pairs:
            ratio = _ratio(mine, theirs)
            rows.append(
                (
                    f"stack within {GOAL_RAW_SLOWDOWN - 1:.0%} of raw: {label}",
                    f"{ratio:.2f}× raw ({mine:.2f} s vs {theirs:.2f} s)",
                    ratio <= GOAL_RAW_SLOWDOWN,
                    f"{(GOAL_RAW_SLOWDOWN - ratio) * 100:+.0f} points",
                )
            )
    cold = results.get("cold_start")
    if cold:
        rows.append(
            (
                f"up → {cold['replicas']} healthy and UP ≤ {GOAL_COLD_START_S:g} s",
                f"{cold['all_up']:.1f} s",
                cold["all_up"] <= GOAL_COLD_START_S,
                f"{GOAL_COLD_START_S - cold['all_up']:+.1f} s",
            )
        )
    name, size = _placement_image(results)
    if size:
        rows.append(
            (
                f"placement image ≤ {GOAL_PLACEMENT_IMAGE_MB:g} MB",
                f"{size / MB:.1f} MB",
                size / MB <= GOAL_PLACEMENT_IMAGE_MB,
                f"{GOAL_PLACEMENT_IMAGE_MB - size / MB:+.1f} MB",
            )
        )
    workers = [p for p in _workers(results.get("memory_stack", {})) if "uss_kib" in p]
    if workers:
        worst = max(p["uss_kib"] for p in workers) / 1024
        rss = max(p["rss_kib"] for p in workers) / 1024
        pss = max(p["pss_kib"] for p in workers) / 1024
        rows.append(
            (
                f"each uwsgi worker beyond the first adds ≤ {GOAL_WORKER_USS_MIB:g} MiB USS (after perfload)",
                f"{worst:.1f} MiB, the largest of {len(workers)} workers (their largest RSS {rss:.1f} MiB, "
                f"PSS {pss:.1f} MiB)",
                worst <= GOAL_WORKER_USS_MIB,
                f"{GOAL_WORKER_USS_MIB - worst:+.1f} MiB",
            )
        )
    return rows


def _layers(results):
    """The placement image's bytes by where they come from: (base, Debian's Python, the venv, the rest)."""
    layers = results.get("placement_layers") or []
    if not layers:
        return None
    base = layers[0][0]
    python = sum(size for size, step in layers if "apt-get install" in step)
    venv = sum(size for size, step in layers if "/opt/venv" in step and "COPY" in step)
    return base, python, venv, sum(size for size, _ in layers) - base - python - venv


def _what_it_would_take(results):
    """For each missed goal: by how much, from this run's figures, and what would close it."""
    missed = {goal for goal, _, ok, _ in goals(results) if not ok}
    lines = []
    if any(goal.startswith("front door") for goal in missed):
        lines.append(
            "- **Front door.** Its proxies' own CPU per request is the cost to compare (see section 2): with "
            "keep-alive to the replicas haproxy pays no TCP connection per request, and what is left is "
            "haproxy's parsing and docker's userland proxy on the published port. The ratio of one run swings "
            "by more than that on this shared machine (the slices of each target in section 2). What would "
            "close the rest: no userland proxy (`dockerd --userland-proxy=false`, the port published by "
            "iptables alone: the engine's choice, not the stack's), and a quiet machine to measure it on."
        )
    layers = _layers(results)
    if any(goal.startswith("placement image") for goal in missed) and layers:
        base, python, venv, rest = (size / MB for size in layers)
        lines.append(
            f"- **Image.** {base:.1f} MB are the base image (shared with every other image of the stack), "
            f"{python:.1f} MB Debian's Python 3.11 with its libraries, {venv:.1f} MB the venv (only the "
            f"bytecode placement imports, placement/trim.py) and {rest:.1f} MB the rest. What would take it "
            "to the goal, each an estimate this run did not measure: the same trim for the standard library's "
            "bytecode (about 6 MB, but it lives in Debian's layer and healthcheck.py and the other scripts "
            "import from it too), and a final stage built from scratch with only the files Python needs, "
            "without apt, dpkg and perl (about 20 MB), at the price of sharing no layer with the other images, "
            "so that the stack as a whole would take more disk, not less."
        )
    if any(goal.startswith("each uwsgi worker") for goal in missed):
        lines.append(
            "- **Worker memory.** A worker's USS is what it has written since the fork: its own caches "
            "(SQLAlchemy's compiled statements, placement's) and every page of the master's objects whose "
            "reference counts it changed, which CPython 3.11 does on each use; `gc.freeze()` stopped the "
            "collector from adding to it. What would close the rest: fewer processes and more threads per "
            "replica (section 5's variants: threads share one copy of everything), or recycling workers "
            "(uwsgi's `max-requests`) at the price of their warm caches."
        )
    if lines:
        lines = ["Where a goal is missed, what it would take:", "", *lines, ""]
    return lines


# --- markdown ------------------------------------------------------------------------


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _memory_rows(label, procs):
    rows = []
    for p in procs:
        uss = f"{p['uss_kib'] / 1024:.1f}" if "uss_kib" in p else "n/a"
        rows.append((label, p["role"], p["threads"], f"{p['rss_kib'] / 1024:.1f}", f"{p['pss_kib'] / 1024:.1f}", uss))
    return rows


def write_markdown(results, path, png_name):
    m, d, a = results["machine"], results["defaults"], results["args"]
    out = [
        "# placedock benchmark",
        "",
        f"Made by `tox -e bench` (`placedock bench`) on {m['date']}, commit `{m['git']}`, in "
        f"{results['total_seconds'] / 60:.1f} minutes. Every figure below comes from that one run; "
        "`docs/benchmark.json` holds the raw results. The benchmark measures and reports: it asserts no goal.",
        "",
        f"![benchmark]({png_name})",
        "",
        "## Machine",
        "",
        _table(
            ["", ""],
            [
                ("CPU", f"{m['nproc']} cores ({m['cpu']})"),
                ("memory", f"{m['memory_gib']:.1f} GiB"),
                ("kernel", m["kernel"]),
                ("docker", f"{m['docker']} (userland proxy on the published loopback ports)"),
                ("compose", m["compose"]),
                ("load generator", f"Python {m['client_python']}, threads with one requests.Session each"),
                ("raw reference", m["raw_python"] or "skipped"),
                (
                    "other load",
                    f"load average {m['loadavg_start']} at the start, {results['loadavg_end']} at the end; "
                    f"{m['other_containers']} other containers running at the start",
                ),
            ],
        ),
        "",
        f"The load generator, haproxy, every placement replica, mariadb and the raw reference all share the "
        f"same {m['nproc']} cores, so the client takes CPU from the servers it measures: read the numbers "
        "as comparisons between the targets of this run, not as capacity.",
        "",
        "## Goals",
        "",
        _table(
            ["goal", "measured", "met", "margin"],
            [(g, v, "met" if ok else "**missed**", margin) for g, v, ok, margin in goals(results)],
        ),
        "",
        *_what_it_would_take(results),
    ]
    out += _perfload_section(results, a)
    out += _throughput_section(results, a)
    out += _start_section(results)
    out += _size_section(results)
    out += _uwsgi_section(results, d)
    out += _defaults_section(results, d)
    out += [
        "## Running it",
        "",
        "```console",
        f"$ tox -e bench                                  # this report: {results['total_seconds'] / 60:.0f} minutes",
        "$ tox -e bench -- --providers 50 --duration 3   # a quick look while developing",
        "$ tox -e bench -- --help                        # every size, duration and switch",
        "```",
        "",
        "It uses its own compose project (`placedock-bench`) on loopback ports 28778 (front door), 28404 "
        "(haproxy stats) and 23306 (mariadb, for the raw reference), plus 28779 for the raw uwsgi, and "
        "ends with `down -v` whatever happens. This run's arguments: "
        + ", ".join(f"`{k}={v}`" for k, v in a.items() if k not in ("out",))
        + ".",
        "",
    ]
    path.write_text("\n".join(out))


def _perfload_targets(results):
    return (
        ("stack (front door)", results["perfload_stack"]),
        ("raw uwsgi on the host", results.get("perfload_raw")),
        ("stack on galera (front door)", results.get("perfload_galera")),
    )


def _ratio_row(label, mine, theirs):
    return (
        label,
        "",
        "",
        "",
        _x(mine["seconds"], theirs["seconds"]),
        _x(mine["requests"] / mine["seconds"], theirs["requests"] / theirs["seconds"]),
        *(
            _x(q["p50"], theirs["allocation_candidates"][name]["p50"])
            + " / "
            + _x(q["p95"], theirs["allocation_candidates"][name]["p95"])
            for name, q in mine["allocation_candidates"].items()
        ),
        "",
    )


def _perfload_section(results, a):
    stack, ref, galera = results["perfload_stack"], results.get("perfload_raw"), results.get("perfload_galera")
    rows = []
    for label, r in _perfload_targets(results):
        if not r:
            continue
        acs = r["allocation_candidates"]
        rows.append(
            (
                label,
                r["created"],
                r["retries"],
                r["failure_count"],
                f"{r['seconds']:.1f}",
                f"{r['requests'] / r['seconds']:.0f}",
                *(f"{_ms(q['p50'])} / {_ms(q['p95'])}" for q in acs.values()),
                " / ".join(str(q["candidates"]) for q in acs.values()),
            )
        )
    if ref:
        rows.append(_ratio_row("stack ÷ raw", stack, ref))
    if galera:
        rows.append(_ratio_row("galera ÷ single mariadb", galera, stack))
    queries = list(stack["allocation_candidates"].items())
    header = [
        "target",
        "providers",
        "5xx retried",
        "providers failed",
        "load time (s)",
        "req/s while loading",
        *(f"`{name}` p50 / p95 (ms)" for name, _ in queries),
        "candidates returned",
    ]
    return [
        "## 1. Perfload (placement's gate scenario)",
        "",
        f"{a['providers']} resource providers created through each target in placeload 0.4.0's shape: "
        "`POST /resource_providers`, then inventory (VCPU 32, MEMORY_MB 8192, DISK_GB 8192), one, two or "
        "three of placeload's three aggregates, and one, two or three of its traits (HW_CPU_X86_AVX2, "
        "HW_CPU_X86_SSE2, STORAGE_DISK_SSD; every chunk starts with AVX2, so every provider has it), with "
        f"the generations placeload sends: 4 requests per provider, {a['perfload_concurrency']} providers "
        f"at a time. Then {a['ac_calls']} sequential calls of each gate query (after "
        f"{queries[0][1]['warmup_calls']} untimed ones, to warm up the uwsgi workers behind the target"
        "), "
        "`openstack-api-version: placement latest`, noauth2 `x-auth-token: admin`:",
        "",
        *(f"- `{name}`: `GET /allocation_candidates?{q['query']}`" for name, q in queries),
        "",
        f"The stack runs {results['cold_start']['replicas']} replicas behind haproxy; the raw reference is "
        "one uwsgi with the same `uwsgi.ini` (except: listening on 127.0.0.1, loading upstream's "
        "`placement.wsgi.api:application` without the image's start-up checks), the same packages and placement "
        "settings, against the same mariadb through its published loopback port, in its own database.",
        "",
        _table(header, rows),
        "",
        "CPU while loading (cores used on average; CPU ms per request of the perfload's requests):",
        "",
        _cpu_table(
            ["target"],
            [((label,), r) for label, r in _perfload_targets(results) if r],
        ),
        "",
        *_galera_note(galera),
        "A step answered with a 5xx is retried (at most 3 times) and counted; a provider whose step still "
        "fails is counted as failed and left as it is (placeload logs such failures and goes on)."
        + "".join(
            f" {label}: " + "; ".join(f"`{x}`" for x in r["retry_samples"]) + "."
            for label, r in (("Stack's retries", stack), ("Raw's retries", ref), ("Galera's retries", galera))
            if r and r["retry_samples"]
        ),
        "",
    ]


def _galera_note(galera):
    if not galera:
        return []
    return [
        f"The galera row is the same stack and the same perfload after `down -v`, with compose.galera.yaml "
        f"merged in (up to {galera['all_up']:.1f} s before every replica was UP): three MariaDB Galera nodes "
        "(their CPU is `galera nodes`), and the `mariadb` service is then the database front door (haproxy in "
        "TCP mode; its CPU is then the `mariadb` column) with one node taking every connection. Each commit "
        "returns only once its write-set has reached the other two nodes.",
        "",
    ]


COMPONENTS = [
    "client",
    "docker-proxy",
    "haproxy",
    "placement",
    "placement (one-off)",
    "raw uwsgi",
    "mariadb",
    "galera nodes",
    "memcached",
    "others",
]
SERVERS = ("placement", "placement (one-off)", "raw uwsgi")
FRONT = ("docker-proxy", "haproxy")


def _cpu_components(entries):
    used = [k for k in COMPONENTS if any(e["cpu"].get(k, 0) > 0.005 * e["cpu"]["elapsed"] for e in entries)]
    return used


def _cpu_cells(cpu, components, requests):
    """Cores used by each component, then server and front-door CPU ms per request."""
    elapsed = cpu.get("elapsed") or float("nan")
    cells = [f"{cpu.get(k, 0) / elapsed:.2f}" for k in components]
    server = sum(cpu.get(k, 0) for k in SERVERS)
    front = sum(cpu.get(k, 0) for k in FRONT)
    cells.append(f"{server * 1000 / requests:.1f}" if requests else "n/a")
    cells.append(f"{front * 1000 / requests:.1f}" if requests else "n/a")
    return cells


def _cpu_table(label_header, labelled_entries):
    """labelled_entries: [(label cells, entry with 'cpu' and a request count)]."""
    rows = [(labels, e) for labels, e in labelled_entries if "elapsed" in e.get("cpu", {})]
    if not rows:
        return "(CPU accounting not available on this machine: no cgroup v1 cpuacct)"
    components = _cpu_components([e for _, e in rows])
    return _table(
        [
            *label_header,
            *components,
            "server CPU ms / request",
            "docker-proxy + haproxy CPU ms / request",
            "InnoDB deadlocks",
            "InnoDB row-lock waits",
        ],
        [
            (
                *labels,
                *_cpu_cells(e["cpu"], components, e.get("completed", e["requests"])),
                e["cpu"].get("Innodb_deadlocks", "n/a"),
                e["cpu"].get("Innodb_row_lock_waits", "n/a"),
            )
            for labels, e in rows
        ],
    )


TARGET_ORDER = ["front door N=3", "front door N=2", "front door N=1", "direct", "haproxy IP"]


def _ordered(runs):
    def key(r):
        target = TARGET_ORDER.index(r["target"]) if r["target"] in TARGET_ORDER else len(TARGET_ORDER)
        return (r["mix"] != "read", target, r["target"])

    return sorted(runs, key=key)


def _per_request_ms(entry, keys):
    cpu = entry.get("cpu") or {}
    requests = entry.get("completed", entry["requests"])
    if "elapsed" not in cpu or not requests:
        return None
    return sum(cpu.get(k, 0) for k in keys) * 1000 / requests


def _front_door_cost(results):
    """What the front door's own CPU costs per request, against the replica's."""
    lines = []
    for mix in ("read", "write"):
        front, direct = _run(results, "front door N=1", mix), _run(results, "direct", mix)
        if not (front and direct):
            continue
        front_ms, server_ms = _per_request_ms(front, FRONT), _per_request_ms(direct, SERVERS)
        if front_ms is None or not server_ms:
            continue
        lines.append(
            f"- {mix} mix: docker-proxy + haproxy spend {front_ms:.1f} ms of CPU per request through the front "
            f"door, the replica {server_ms:.1f} ms per request served directly; with the cores as the limit, "
            f"that alone leaves the front door about {server_ms / (server_ms + front_ms):.2f}× of direct."
        )
    if lines:
        lines = ["The front door's own CPU against the replica's:", "", *lines, ""]
    return lines


def _spread(run):
    """The req/s of each slice a target took, showing how much the machine's other load moved them."""
    values = run.get("slice_rps", [])
    return " / ".join(f"{v:.0f}" for v in values) if len(values) > 1 else ""


def _throughput_section(results, a):
    runs = _ordered(results["throughput"])
    spread = any(len(r.get("slice_rps", [])) > 1 for r in runs)
    rows = [
        (
            r["target"],
            r["mix"],
            f"{r['rps']:.1f}",
            *([_spread(r)] if spread else []),
            _ms(r["p50"]),
            _ms(r["p99"]),
            r["requests"],
            r["errors"],
            r["refused"],
        )
        for r in runs
    ]
    ratios = []
    for mix in ("read", "write"):
        direct = _run(results, "direct", mix)
        for target in ("front door N=1", "haproxy IP"):
            entry = _run(results, target, mix)
            if entry and direct:
                ratios.append(
                    (
                        f"{target} ÷ direct",
                        mix,
                        _x(entry["rps"], direct["rps"]),
                        _x(entry["p50"], direct["p50"]),
                        _x(entry["p99"], direct["p99"]),
                    )
                )
        one = _run(results, "front door N=1", mix)
        for r in runs:
            if r["mix"] == mix and r["replicas"] > 1 and one:
                ratios.append(
                    (
                        f"{r['target']} ÷ front door N=1",
                        mix,
                        _x(r["rps"], one["rps"]),
                        _x(r["p50"], one["p50"]),
                        _x(r["p99"], one["p99"]),
                    )
                )
    per_kind = []
    for mix in ("read", "write"):
        mine = [r for r in runs if r["mix"] == mix]
        names = list(dict.fromkeys(k for r in mine for k in r["by_kind"]))
        rows_kind = [
            (
                r["target"],
                *(
                    f"{_ms(r['by_kind'][k]['p50'])} / {_ms(r['by_kind'][k]['p99'])}" if k in r["by_kind"] else ""
                    for k in names
                ),
            )
            for r in mine
        ]
        per_kind += [
            f"{mix.capitalize()} mix, p50 / p99 in ms per request kind:",
            "",
            _table(["target", *names], rows_kind),
            "",
        ]
    errors = [s for r in runs for s in r["error_samples"]]
    interleaved = ", ".join(t for t in TARGET_ORDER[2:] if any(r["target"] == t for r in runs))
    return [
        "## 2. Throughput",
        "",
        f"{a['concurrency']} client threads for {float(a['duration']):g} s per mix and target (each target first "
        f"warmed up for {float(a['warmup']):g} s, uncounted), on the {results['perfload_stack']['created']} "
        "providers of the stack's perfload. **read**: `GET /`, `GET /resource_providers?name=<random provider>`, "
        "`GET /allocation_candidates?resources=VCPU:1,DISK_GB:10,MEMORY_MB:256&in_tree=<random provider>` "
        "(one provider's candidates) in turn. **write**: `PUT /allocations/<new consumer>` (VCPU 1, "
        "MEMORY_MB 256 on a random provider, `consumer_generation: null`, `consumer_type: INSTANCE`), then "
        "`DELETE` it; a 409 generation conflict is refused (counted apart, never in `requests`) and sent again, "
        "at most 5 times. `requests`: reads answered 200 and writes acknowledged (placedock.traffic.ledger); `errors`: "
        "anything else. Latency is per request, as the client saw it.",
        "",
        "Targets: **front door N** = `127.0.0.1:28778` (docker's userland proxy → haproxy → N replicas); "
        "**direct** = the one replica's container IP, port 8778; **haproxy IP** = haproxy's container IP "
        "(haproxy without docker's proxy) with the same one replica behind it. The scaled runs go from "
        f"N={results['cold_start']['replicas']} down to 1 with `up -d --no-deps --no-recreate --scale`, "
        f"each once haproxy's stats show exactly N UP. The one-replica targets ({interleaved}) take turns in "
        f"{a['rounds']} slices per mix, so that other load on the machine falls on each of them alike.",
        "",
        _table(
            [
                "target",
                "mix",
                "req/s",
                *(["req/s of each slice"] if spread else []),
                "p50 (ms)",
                "p99 (ms)",
                "requests",
                "errors",
                "refused (409)",
            ],
            rows,
        ),
        "",
        _table(["ratio", "mix", "req/s", "p50", "p99"], ratios),
        "",
        *per_kind,
        "Where the CPU went (cores used on average while measuring; 'others' is the rest of the machine: "
        "other people's work and the kernel outside our containers):",
        "",
        _cpu_table(["target", "mix"], [((r["target"], r["mix"]), r) for r in runs]),
        "",
        *_front_door_cost(results),
        *(["Error samples: " + "; ".join(f"`{e}`" for e in errors), ""] if errors else []),
    ]


def _start_section(results):
    cold, rs = results["cold_start"], results["restart"]
    build = results.get("build_seconds")
    rows = [
        (f"`up -d --scale placement={cold['replicas']}` returned (fresh volumes)", f"{cold['up_returned']:.1f}"),
        (f"all {cold['replicas']} replicas healthy and UP in haproxy", f"{cold['all_up']:.1f}"),
        ("`docker restart` of one replica returned", f"{rs['restart_returned']:.1f}"),
        ("… haproxy first showed it not UP", f"{rs['seen_down']:.1f}"),
        ("… haproxy showed it UP again", f"{rs['back_up']:.1f}"),
    ]
    if build is not None:
        rows.insert(0, ("`docker compose build` (cached layers)", f"{build:.1f}"))
    return [
        "## 3. Cold start and restart",
        "",
        "Images already built; `down -v` first so mariadb initialises a fresh volume and `placement-db-sync` "
        "migrates an empty database. Times from the start of the command; haproxy's stats CSV polled every "
        f"0.1 s. Replica health at the end of the cold start: {', '.join(cold['health'])}.",
        "",
        _table(["step", "seconds"], rows),
        "",
    ]


def _size_section(results):
    rows = [(f"`{name}`", f"{size / MB:.1f}", f"{size / MIB:.1f}") for name, size in results["images"].items()]
    mem_rows = []
    for container, procs in results["memory_stack"].items():
        mem_rows += _memory_rows(f"replica `{container}` after perfload", procs)
    for container, procs in results.get("memory_after_throughput", {}).items():
        mem_rows += _memory_rows(f"replica `{container}` after throughput", procs)
    if results.get("perfload_raw"):
        mem_rows += _memory_rows("raw uwsgi after perfload", results["perfload_raw"]["memory"])
    return [
        "## 4. Image sizes and memory",
        "",
        "Sizes from `docker image inspect` (MB = 10⁶ bytes, as docker prints them).",
        "",
        _table(["image", "MB", "MiB"], rows),
        "",
        "Memory of every uwsgi process from `/proc/<pid>/status` (VmRSS) and `/proc/<pid>/smaps_rollup` "
        "(PSS: shared pages divided among the processes sharing them; USS: Private_Clean + Private_Dirty, "
        "the pages no other process maps). The workers fork from a master that loaded the app and froze "
        "its objects out of the garbage collector's sight (`gc.freeze()`, placement/placedock_wsgi.py), so "
        "much of each worker's RSS is shared with the master and its siblings: a worker's USS is what one "
        "more worker costs.",
        "",
        _table(["process", "role", "threads", "RSS (MiB)", "PSS (MiB)", "USS (MiB)"], mem_rows),
        "",
    ]


def _uwsgi_section(results, d):
    env = results["env_override"]
    base_read, base_write = _run(results, "direct", "read"), _run(results, "direct", "write")
    base_workers = _workers(results["memory_after_throughput"])
    rows = []
    if base_read and base_write:
        rows.append(_variant_row(f"{d['processes']}×{d['threads']} (default)", base_read, base_write, base_workers))
    for v in results.get("variants", []):
        workers = [p for p in v["memory"] if p["role"] == "worker"]
        rows.append(_variant_row(f"{v['processes']}×{v['threads']}", v["read"], v["write"], workers))
    verdict = (
        "honoured"
        if env["honoured"]
        else "**not honoured**: `uwsgi.ini`'s own `processes`/`threads` win over the environment, so "
        "`UWSGI_PROCESSES`/`UWSGI_THREADS` (as README and uwsgi.ini describe them) change nothing; command-line "
        "flags after `--ini` do win, which is how the variants below are run"
    )
    return [
        "## 5. uwsgi processes × threads",
        "",
        f"A replica started with `UWSGI_PROCESSES={env['asked'][0]} UWSGI_THREADS={env['asked'][1]}` in its "
        f"environment ran {env['seen'][0]} worker(s) of {env['seen'][1]} thread(s): {verdict}.",
        "",
        "Each variant runs as a one-off replica container (`docker compose run`, so not in haproxy's DNS) "
        "started as `uwsgi --ini /etc/placement/uwsgi.ini --processes P --threads T` and driven directly by "
        "the same mixes; the default row is the **direct** run of section 2. Memory is after the mixes.",
        "",
        _table(
            [
                "processes × threads",
                "read req/s",
                "read p99 (ms)",
                "read: server CPU ms / request",
                "write req/s",
                "write p99 (ms)",
                "write: server CPU ms / request",
                "workers",
                "largest worker RSS (MiB)",
                "workers' PSS total (MiB)",
            ],
            rows,
        ),
        "",
    ]


def _server_ms(entry):
    cpu = entry.get("cpu") or {}
    requests = entry.get("completed", entry["requests"])
    if "elapsed" not in cpu or not requests:
        return "n/a"
    return f"{sum(cpu.get(k, 0) for k in SERVERS) * 1000 / requests:.1f}"


def _variant_row(label, read, write, workers):
    return (
        label,
        f"{read['rps']:.1f}",
        _ms(read["p99"]),
        _server_ms(read),
        f"{write['rps']:.1f}",
        _ms(write["p99"]),
        _server_ms(write),
        len(workers),
        f"{max(p['rss_kib'] for p in workers) / 1024:.1f}" if workers else "",
        f"{sum(p['pss_kib'] for p in workers) / 1024:.1f}" if workers else "",
    )


def _cpu_split(results):
    """' This run: ...' - the replica's and mariadb's CPU per request served directly."""
    parts = []
    for mix in ("read", "write"):
        direct = _run(results, "direct", mix)
        server = direct and _per_request_ms(direct, SERVERS)
        db = direct and _per_request_ms(direct, ("mariadb",))
        if server and db is not None:
            parts.append(f"{mix} mix {server:.1f} ms in the replica against {db:.1f} ms in mariadb")
    if not parts:
        return ""
    direct = _run(results, "direct", "read")
    python_bound = _per_request_ms(direct, SERVERS) > _per_request_ms(direct, ("mariadb",))
    return (
        " This run, CPU per request served directly: "
        + "; ".join(parts)
        + (
            ". So on this machine placement's own Python, more than the database, is what fills the cores; "
            if python_bound
            else ". So on this machine the database is what fills the cores; "
        )
        + "the threads overlap the database round trips (and, for writes, oslo.db's pause before retrying a "
        "deadlocked transaction)."
    )


def _defaults_section(results, d):
    errors = sum(r["errors"] for r in results["throughput"])
    per_process = d["pool"] + d["overflow"]
    per_replica = d["processes"] * per_process
    most = d["server_slots"] * per_replica
    haproxy_ratio = []
    for mix in ("read", "write"):
        hap, direct, front = (
            _run(results, "haproxy IP", mix),
            _run(results, "direct", mix),
            _run(results, "front door N=1", mix),
        )
        if hap and direct and front:
            haproxy_ratio.append(
                f"{mix}: haproxy IP {_x(hap['rps'], direct['rps'])} direct, front door "
                f"{_x(front['rps'], direct['rps'])} direct"
            )
    return [
        "## 6. Why the defaults are what they are",
        "",
        f"- **{d['processes']} processes × {d['threads']} threads per replica** "
        "(`UWSGI_PROCESSES`/`UWSGI_THREADS` in `placement/Dockerfile`). "
        "The threads overlap each request's waits on mariadb; the GIL lets "
        f"one process run Python on one core at a time, so {d['processes']} processes can use both cores of "
        "a small machine. The app loads once in the master before the fork (`lazy-apps = false`), so extra "
        "workers share its pages; section 5 measures other splits." + _cpu_split(results),
        f"- **pool {d['pool']} + overflow {d['overflow']}** per process (`env/placement.env`). One process "
        f"never has more than {d['threads']} requests in flight, so {d['pool']} pooled connections cover "
        f"them with one to spare; the overflow absorbs the odd burst. That is {per_replica} connections per "
        f"replica at most and {most} for {d['server_slots']} replicas (haproxy's server slots), inside "
        f"mariadb's `max_connections = {d['max_connections']}` with room for keystone. "
        + (
            f"No request of the mixes failed, so none waited out the pool (`POOL_TIMEOUT={d['pool_timeout']}` s)."
            if not errors
            else f"{errors} requests of the mixes failed (samples in section 2)."
        ),
        f"- **{d['balance']}** (`haproxy/haproxy.cfg`). Placement's requests are short and alike, so taking "
        "turns spreads them evenly (the stack tests check the spread); section 2's scaled runs show what "
        "more replicas give on this machine.",
        f"- **Keep-alive from haproxy to the replicas** (uwsgi's `{d['socket']}`, haproxy's "
        f"`http-reuse {d['http_reuse']}`, at most {d['server_maxconn']} connections per replica). Requests "
        "reuse open connections instead of paying for a new TCP connection each. uwsgi holds a thread for "
        "each open connection, idle or not, so haproxy opens fewer than a replica has threads "
        f"({d['processes']} × {d['threads']}) and queues the rest. haproxy closes the idle ones it no longer "
        f"needs within seconds; a replica closes one only after {d['socket_timeout']} s (uwsgi's "
        "`socket-timeout`), so it never closes one haproxy is about to reuse, and a replica told to stop "
        "leaves haproxy's rotation before it closes them. This run: "
        + ("; ".join(haproxy_ratio) or "not measured")
        + ".",
        "",
    ]


# --- plot ----------------------------------------------------------------------------


def write_plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    m = results["machine"]
    fig.suptitle(
        f"placedock benchmark — {m['date']} — {m['nproc']} cores, {m['memory_gib']:.0f} GiB, "
        f"kernel {m['kernel']}, docker {m['docker']} (client and servers share the cores)",
        fontsize=12,
    )
    _plot_perfload(axes[0][0], results)
    _plot_candidates(axes[0][1], results)
    _plot_throughput(axes[0][2], results)
    _plot_latency(axes[1][0], results)
    _plot_variants(axes[1][1], results)
    _plot_start(axes[1][2], results)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bar_labels(ax, bars, fmt):
    for bar in bars:
        height = bar.get_height()
        ax.annotate(
            fmt.format(height),
            (bar.get_x() + bar.get_width() / 2, height),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )


def _plot_perfload(ax, results):
    stack, ref = results["perfload_stack"], results.get("perfload_raw")
    labels, values = [f"stack\n({results['cold_start']['replicas']} replicas)"], [stack["seconds"]]
    colors = ["tab:blue"]
    if ref:
        labels.append("raw uwsgi\non the host")
        values.append(ref["seconds"])
        colors.append("tab:gray")
    if results.get("perfload_galera"):
        labels.append("stack on\ngalera")
        values.append(results["perfload_galera"]["seconds"])
        colors.append("tab:purple")
    bars = ax.bar(labels, values, color=colors)
    _bar_labels(ax, bars, "{:.1f} s")
    ax.set_ylim(top=max(values) * 1.25)
    ax.set_title(f"Perfload: {stack['created']} providers, load time (lower is better)")
    ax.set_ylabel("seconds")
    if ref:
        ax.axhline(
            ref["seconds"] * GOAL_RAW_SLOWDOWN,
            color="tab:red",
            ls="--",
            lw=1,
            label=f"raw + {GOAL_RAW_SLOWDOWN - 1:.0%} (goal)",
        )
        ax.legend(loc="lower right", fontsize=8)


def _plot_candidates(ax, results):
    stack, ref = results["perfload_stack"], results.get("perfload_raw")
    queries = list(stack["allocation_candidates"])
    series = [("stack p50", stack, "p50", "tab:blue"), ("stack p95", stack, "p95", "lightsteelblue")]
    if ref:
        series += [("raw p50", ref, "p50", "tab:gray"), ("raw p95", ref, "p95", "silver")]
    galera = results.get("perfload_galera")
    if galera:
        series += [("galera p50", galera, "p50", "tab:purple"), ("galera p95", galera, "p95", "plum")]
    width = 0.8 / len(series)
    top = 0.0
    for i, (label, r, key, color) in enumerate(series):
        xs = [q + (i - (len(series) - 1) / 2) * width for q in range(len(queries))]
        ys = [r["allocation_candidates"][name][key] * 1000 for name in queries]
        _bar_labels(ax, ax.bar(xs, ys, width, label=label, color=color), "{:.0f}")
        top = max(top, *ys)
    ax.set_ylim(top=top * 1.3)  # room for the legend above the bars
    ax.set_xticks(
        range(len(queries)), [f"{q}\n({stack['allocation_candidates'][q]['candidates']} candidates)" for q in queries]
    )
    ax.set_title("GET /allocation_candidates after perfload (ms)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8, ncols=min(len(series), 4), loc="upper center")


def _targets(results):
    return list(dict.fromkeys(r["target"] for r in _ordered(results["throughput"])))


def _plot_throughput(ax, results):
    targets = _targets(results)
    for i, (mix, color) in enumerate((("read", "tab:green"), ("write", "tab:orange"))):
        ys = [_run(results, t, mix)["rps"] for t in targets]
        xs = [x + (i - 0.5) * 0.4 for x in range(len(targets))]
        _bar_labels(ax, ax.bar(xs, ys, 0.4, label=f"{mix} mix", color=color), "{:.0f}")
        direct = _run(results, "direct", mix)
        if direct and "front door N=1" in targets:
            x = targets.index("front door N=1") + (i - 0.5) * 0.4
            goal = direct["rps"] * GOAL_FRONT_DOOR_RATIO
            ax.hlines(goal, x - 0.2, x + 0.2, colors="tab:red", linestyles="--", lw=1.5)
    ax.plot([], [], color="tab:red", ls="--", label=f"goal: {GOAL_FRONT_DOOR_RATIO:g}× direct")
    ax.set_xticks(range(len(targets)), [t.replace(" N=", "\nN=") for t in targets])
    concurrency = results["throughput"][0]["concurrency"]
    ax.set_title(f"Throughput at {concurrency} client threads (req/s, higher is better)")
    ax.set_ylabel("requests per second")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.2)  # room for the legend above the bars
    ax.legend(fontsize=8, ncols=3, loc="upper center")


def _plot_latency(ax, results):
    targets = _targets(results)
    series = [
        ("read p50", "read", "p50", "tab:green"),
        ("read p99", "read", "p99", "palegreen"),
        ("write p50", "write", "p50", "tab:orange"),
        ("write p99", "write", "p99", "navajowhite"),
    ]
    width = 0.2
    top = 0.0
    for i, (label, mix, key, color) in enumerate(series):
        xs = [x + (i - 1.5) * width for x in range(len(targets))]
        ys = [_run(results, t, mix)[key] * 1000 for t in targets]
        ax.bar(xs, ys, width, label=label, color=color)
        top = max(top, *ys)
    ax.set_xticks(range(len(targets)), [t.replace(" N=", "\nN=") for t in targets])
    ax.set_yscale("log")
    ax.set_ylim(top=top * 5)  # room for the legend above the bars
    ax.set_title("Latency of the mixes (ms, log scale, lower is better)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8, ncols=2)


def _plot_variants(ax, results):
    d = results["defaults"]

    def pss(workers):
        return f"\nworkers' PSS {sum(p['pss_kib'] for p in workers) / 1024:.0f} MiB" if workers else ""

    rows = [
        (
            f"{d['processes']}×{d['threads']} (default)" + pss(_workers(results["memory_after_throughput"])),
            _run(results, "direct", "read"),
            _run(results, "direct", "write"),
        )
    ]
    rows += [
        (
            f"{v['processes']}×{v['threads']}" + pss([p for p in v["memory"] if p["role"] == "worker"]),
            v["read"],
            v["write"],
        )
        for v in results.get("variants", [])
    ]
    for i, (mix, color) in enumerate((("read", "tab:green"), ("write", "tab:orange"))):
        xs = [x + (i - 0.5) * 0.4 for x in range(len(rows))]
        ys = [row[1 + i]["rps"] for row in rows]
        _bar_labels(ax, ax.bar(xs, ys, 0.4, label=f"{mix} mix", color=color), "{:.0f}")
    ax.set_xticks(range(len(rows)), [row[0] for row in rows])
    ax.set_title("uwsgi processes × threads, one replica direct (req/s)")
    ax.set_ylabel("requests per second")
    ax.legend(fontsize=8)


def _plot_start(ax, results):
    cold, rs = results["cold_start"], results["restart"]
    labels = [
        f"up --scale {cold['replicas']}\nreturned",
        f"{cold['replicas']} replicas\nUP in haproxy",
        "restart one\nreplica: UP again",
    ]
    values = [cold["up_returned"], cold["all_up"], rs["back_up"]]
    bars = ax.bar(labels, values, color=["lightsteelblue", "tab:blue", "tab:purple"])
    _bar_labels(ax, bars, "{:.1f} s")
    ax.axhline(GOAL_COLD_START_S, color="tab:red", ls="--", lw=1, label=f"goal: ≤ {GOAL_COLD_START_S:g} s to UP")
    ax.set_title("Cold start (fresh volumes) and one replica's restart")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
