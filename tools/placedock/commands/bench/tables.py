"""The numbers and markdown tables of docs/benchmark.md, from one run's results.

No sentence lives here: report.md.tmpl holds the prose, report.py fills it.
A table's headers and cells are the only words. plot.py draws from the same
lookups (run, workers, ordered) and goals.
"""

import statistics

MIB = 2**20
MB = 10**6

# The goals the report shows next to the numbers (it reports them, never asserts).
GOAL_FRONT_DOOR_RATIO = 0.97
# The stable figure of the front door's cost: docker-proxy's and haproxy's CPU per request.
GOAL_PROXY_CPU_MS = 0.5
GOAL_RAW_SLOWDOWN = 1.05
GOAL_COLD_START_S = 15.0
GOAL_PLACEMENT_IMAGE_MB = 120.0
# The noauth stack's images, each layer counted once: 30 % below round one's
# 386.3 MB (placement 175.5, mariadb 215.6, haproxy 87.9 and memcached 129.6,
# all FROM the 74.1 MB base).
STACK_IMAGES_BEFORE_MB = 386.3
GOAL_STACK_IMAGES_MB = round(STACK_IMAGES_BEFORE_MB * 0.7, 1)
# What each worker beyond the first adds: its USS (the pages only it maps).
GOAL_WORKER_USS_MIB = 30.0

COMPONENTS = [
    "client",
    "docker-proxy",
    "haproxy",
    "placement",
    "placement (one-off)",
    "raw uwsgi",
    "mariadb",
    "galera nodes",
    "postgres",
    "memcached",
    "others",
]
SERVERS = ("placement", "placement (one-off)", "raw uwsgi")
FRONT = ("docker-proxy", "haproxy")
TARGET_ORDER = ["front door N=3", "front door N=2", "front door N=1", "direct", "haproxy IP"]


# --- lookups -------------------------------------------------------------------------


def run(results, target, mix):
    for entry in results.get("throughput", []):
        if entry["target"] == target and entry["mix"] == mix:
            return entry
    return None


def workers(memory_by_container):
    return [p for procs in memory_by_container.values() for p in procs if p["role"] == "worker"]


def ordered(runs):
    def key(r):
        target = TARGET_ORDER.index(r["target"]) if r["target"] in TARGET_ORDER else len(TARGET_ORDER)
        return (r["mix"] != "read", target, r["target"])

    return sorted(runs, key=key)


def per_request_ms(entry, keys):
    cpu = entry.get("cpu") or {}
    requests = entry.get("completed", entry["requests"])
    if "elapsed" not in cpu or not requests:
        return None
    return sum(cpu.get(k, 0) for k in keys) * 1000 / requests


def refused_key(runs):
    """'refused' (placedock.traffic.ledger's count), or 'conflicts' in a run from before the ledger."""
    return "conflicts" if runs and "refused" not in runs[0] else "refused"


def perfload_targets(results):
    targets = (
        ("stack (front door)", results["perfload_stack"]),
        ("raw uwsgi on the host", results.get("perfload_raw")),
        ("stack on galera (front door)", results.get("perfload_galera")),
        ("stack on postgres (front door)", results.get("perfload_postgres")),
    )
    return [(label, r) for label, r in targets if r]


def ms(seconds):
    return f"{seconds * 1000:.1f}"


def ratio(a, b):
    return a / b if b else float("nan")


def x(a, b):
    """a ÷ b as '1.23×', or 'n/a' when b is zero."""
    return f"{a / b:.2f}×" if b else "n/a"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- machine and goals ---------------------------------------------------------------


def machine_table(results):
    m = results["machine"]
    other = (
        f"load average {m['loadavg_start']} at the start, {results['loadavg_end']} at the end; "
        f"{m['other_containers']} other containers running at the start"
    )
    rows = [
        ("CPU", f"{m['nproc']} cores ({m['cpu']})"),
        ("memory", f"{m['memory_gib']:.1f} GiB"),
        ("kernel", m["kernel"]),
        ("docker", f"{m['docker']} (userland proxy on the published loopback ports)"),
        ("compose", m["compose"]),
        ("load generator", f"Python {m['client_python']}, threads with one requests.Session each"),
        ("raw reference", m["raw_python"] or "skipped"),
        ("other load", other),
    ]
    return table(["", ""], rows)


def goals(results):
    """[(key, goal, measured text, met, margin text)] for every goal the run can speak to."""
    rows = []
    for mix in ("read", "write"):
        front, direct = run(results, "front door N=1", mix), run(results, "direct", mix)
        if front and direct:
            r = ratio(front["rps"], direct["rps"])
            goal = f"front door N=1 ≥ {GOAL_FRONT_DOOR_RATIO:.2f}× direct ({mix} mix, req/s)"
            measured = f"{r:.2f}× ({front['rps']:.0f} vs {direct['rps']:.0f} req/s)"
            met = r >= GOAL_FRONT_DOOR_RATIO
            # The interleaved slices (A/B, B/A, ...) of the same round, each a ratio of its own.
            slices = [a / b for a, b in zip(front.get("slice_rps", []), direct.get("slice_rps", []), strict=False) if b]
            if len(slices) > 1:
                measured += f"; its {len(slices)} interleaved slices {min(slices):.2f}–{max(slices):.2f}×"
                if min(slices) < GOAL_FRONT_DOOR_RATIO <= max(slices):
                    met = None
            rows.append(("front door", goal, measured, met, f"{r - GOAL_FRONT_DOOR_RATIO:+.2f}×"))
            cost = per_request_ms(front, FRONT)
            if cost is not None:
                goal = f"docker-proxy + haproxy CPU ≤ {GOAL_PROXY_CPU_MS:g} ms per front-door request ({mix} mix)"
                rows.append(
                    (
                        "proxy cpu",
                        goal,
                        f"{cost:.2f} ms",
                        cost <= GOAL_PROXY_CPU_MS,
                        f"{GOAL_PROXY_CPU_MS - cost:+.2f} ms",
                    )
                )
    stack, ref = results.get("perfload_stack"), results.get("perfload_raw")
    if stack and ref:
        pairs = [("perfload load time", stack["seconds"], ref["seconds"])]
        for query, entry in stack["allocation_candidates"].items():
            for q in ("p50", "p95"):
                pairs.append((f"allocation candidates ({query}) {q}", entry[q], ref["allocation_candidates"][query][q]))
        for label, mine, theirs in pairs:
            r = ratio(mine, theirs)
            goal = f"stack within {GOAL_RAW_SLOWDOWN - 1:.0%} of raw: {label}"
            measured = f"{r:.2f}× raw ({mine:.2f} s vs {theirs:.2f} s)"
            rows.append(("raw", goal, measured, r <= GOAL_RAW_SLOWDOWN, f"{(GOAL_RAW_SLOWDOWN - r) * 100:+.0f} points"))
    cold = results.get("cold_start")
    if cold:
        goal = f"up → {cold['replicas']} healthy and UP ≤ {GOAL_COLD_START_S:g} s"
        margin = f"{GOAL_COLD_START_S - cold['all_up']:+.1f} s"
        rows.append(("cold start", goal, f"{cold['all_up']:.1f} s", cold["all_up"] <= GOAL_COLD_START_S, margin))
    size = placement_image_size(results)
    if size:
        mb = size / MB
        margin = f"{GOAL_PLACEMENT_IMAGE_MB - mb:+.1f} MB"
        rows.append(
            (
                "image",
                f"placement image ≤ {GOAL_PLACEMENT_IMAGE_MB:g} MB",
                f"{mb:.1f} MB",
                mb <= GOAL_PLACEMENT_IMAGE_MB,
                margin,
            )
        )
    if size and results.get("image_base"):
        mb = stack_image_bytes(results) / MB
        rows.append(
            (
                "stack images",
                f"the stack's images, each layer once, ≤ {GOAL_STACK_IMAGES_MB:g} MB"
                f" (−30 % of {STACK_IMAGES_BEFORE_MB:g} MB)",
                f"{mb:.1f} MB ({mb / STACK_IMAGES_BEFORE_MB - 1:+.1%})",
                mb <= GOAL_STACK_IMAGES_MB,
                f"{GOAL_STACK_IMAGES_MB - mb:+.1f} MB",
            )
        )
    procs = [p for p in workers(results.get("memory_stack", {})) if "uss_kib" in p]
    if procs:
        worst, rss, pss = (max(p[k] for p in procs) / 1024 for k in ("uss_kib", "rss_kib", "pss_kib"))
        goal = f"each uwsgi worker beyond the first adds ≤ {GOAL_WORKER_USS_MIB:g} MiB USS (after perfload)"
        measured = (
            f"{worst:.1f} MiB, the largest of {len(procs)} workers (their largest RSS {rss:.1f} MiB, PSS {pss:.1f} MiB)"
        )
        margin = f"{GOAL_WORKER_USS_MIB - worst:+.1f} MiB"
        rows.append(("worker memory", goal, measured, worst <= GOAL_WORKER_USS_MIB, margin))
    return rows


# met, missed, or (None) the goal lies within the spread of the interleaved slices.
VERDICTS = {True: "met", False: "**missed**", None: "within the noise"}


def goals_table(rows):
    return table(
        ["goal", "measured", "met", "margin"],
        [(goal, measured, VERDICTS[ok], margin) for _, goal, measured, ok, margin in rows],
    )


def placement_image_size(results):
    sizes = results.get("images", {})
    return next((size for name, size in sizes.items() if "/placement:" in name), None)


def stack_image_bytes(results):
    """The stack's images, each layer once: the base's bytes once for all the
    images built on it."""
    base = results.get("image_base") or {}
    built_on = base.get("built_on", [])
    total = sum(results.get("images", {}).values())
    return total - base.get("bytes", 0) * max(len(built_on) - 1, 0)


# --- 1. perfload ---------------------------------------------------------------------


def _ratio_row(label, mine, theirs):
    return (
        label,
        "",
        "",
        "",
        x(mine["seconds"], theirs["seconds"]),
        x(mine["requests"] / mine["seconds"], theirs["requests"] / theirs["seconds"]),
        *(
            x(q["p50"], theirs["allocation_candidates"][name]["p50"])
            + " / "
            + x(q["p95"], theirs["allocation_candidates"][name]["p95"])
            for name, q in mine["allocation_candidates"].items()
        ),
        "",
    )


def perfload_table(results):
    stack, ref = results["perfload_stack"], results.get("perfload_raw")
    galera, postgres = results.get("perfload_galera"), results.get("perfload_postgres")
    rows = []
    for label, r in perfload_targets(results):
        acs = r["allocation_candidates"].values()
        rows.append(
            (
                label,
                r["created"],
                r["retries"],
                r["failure_count"],
                f"{r['seconds']:.1f}",
                f"{r['requests'] / r['seconds']:.0f}",
                *(f"{ms(q['p50'])} / {ms(q['p95'])}" for q in acs),
                " / ".join(str(q["candidates"]) for q in acs),
            )
        )
    if ref:
        rows.append(_ratio_row("stack ÷ raw", stack, ref))
    if galera:
        rows.append(_ratio_row("galera ÷ single mariadb", galera, stack))
    if postgres:
        rows.append(_ratio_row("postgres ÷ single mariadb", postgres, stack))
    queries = [f"`{name}` p50 / p95 (ms)" for name in stack["allocation_candidates"]]
    header = ["target", "providers", "5xx retried", "providers failed", "load time (s)", "req/s while loading"]
    return table([*header, *queries, "candidates returned"], rows)


# --- CPU -----------------------------------------------------------------------------


def _cpu_cells(cpu, components, requests):
    """Cores used by each component, then server and front-door CPU ms per request."""
    elapsed = cpu.get("elapsed") or float("nan")
    cells = [f"{cpu.get(k, 0) / elapsed:.2f}" for k in components]
    server = sum(cpu.get(k, 0) for k in SERVERS)
    front = sum(cpu.get(k, 0) for k in FRONT)
    cells.append(f"{server * 1000 / requests:.1f}" if requests else "n/a")
    cells.append(f"{front * 1000 / requests:.1f}" if requests else "n/a")
    return cells


def cpu_table(label_header, labelled_entries):
    """labelled_entries: [(label cells, entry with 'cpu' and a request count)]; None without CPU accounting."""
    rows = [(labels, e) for labels, e in labelled_entries if "elapsed" in e.get("cpu", {})]
    if not rows:
        return None
    entries = [e for _, e in rows]
    components = [k for k in COMPONENTS if any(e["cpu"].get(k, 0) > 0.005 * e["cpu"]["elapsed"] for e in entries)]
    per_request = ["server CPU ms / request", "docker-proxy + haproxy CPU ms / request"]
    return table(
        [*label_header, *components, *per_request, "InnoDB deadlocks", "InnoDB row-lock waits"],
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


# --- 2. throughput -------------------------------------------------------------------


def _spread(entry):
    """The req/s of each slice a target took, showing how much the machine's other load moved them."""
    values = entry.get("slice_rps", [])
    return " / ".join(f"{v:.0f}" for v in values) if len(values) > 1 else ""


def throughput_table(runs):
    spread = any(len(r.get("slice_rps", [])) > 1 for r in runs)
    key = refused_key(runs)
    rows = [
        (
            r["target"],
            r["mix"],
            f"{r['rps']:.1f}",
            *([_spread(r)] if spread else []),
            ms(r["p50"]),
            ms(r["p99"]),
            r["requests"],
            r["errors"],
            r[key],
        )
        for r in runs
    ]
    slices = ["req/s of each slice"] if spread else []
    refused = "refused (409)" if key == "refused" else "409 conflicts"
    return table(["target", "mix", "req/s", *slices, "p50 (ms)", "p99 (ms)", "requests", "errors", refused], rows)


def ratio_table(results, runs):
    rows = []
    for mix in ("read", "write"):
        direct, one = run(results, "direct", mix), run(results, "front door N=1", mix)
        pairs = [
            (run(results, target, mix), direct, f"{target} ÷ direct") for target in ("front door N=1", "haproxy IP")
        ]
        pairs += [(r, one, f"{r['target']} ÷ front door N=1") for r in runs if r["mix"] == mix and r["replicas"] > 1]
        for entry, base, label in pairs:
            if entry and base:
                rows.append((label, mix, *(x(entry[k], base[k]) for k in ("rps", "p50", "p99"))))
    return table(["ratio", "mix", "req/s", "p50", "p99"], rows)


def kind_table(runs, mix):
    mine = [r for r in runs if r["mix"] == mix]
    names = list(dict.fromkeys(k for r in mine for k in r["by_kind"]))
    rows = [
        (
            r["target"],
            *(
                f"{ms(r['by_kind'][k]['p50'])} / {ms(r['by_kind'][k]['p99'])}" if k in r["by_kind"] else ""
                for k in names
            ),
        )
        for r in mine
    ]
    return table(["target", *names], rows)


# --- 3. start, 4. sizes and memory, 5. variants ---------------------------------------


def start_table(results):
    cold, rs = results["cold_start"], results["restart"]
    rows = [
        (f"`up -d --scale placement={cold['replicas']}` returned (fresh volumes)", f"{cold['up_returned']:.1f}"),
        (f"all {cold['replicas']} replicas healthy and UP in haproxy", f"{cold['all_up']:.1f}"),
        ("`docker restart` of one replica returned", f"{rs['restart_returned']:.1f}"),
        ("… haproxy first showed it not UP", f"{rs['seen_down']:.1f}"),
        ("… haproxy showed it UP again", f"{rs['back_up']:.1f}"),
    ]
    if results.get("build_seconds") is not None:
        rows.insert(0, ("`docker compose build` (cached layers)", f"{results['build_seconds']:.1f}"))
    return table(["step", "seconds"], rows)


def images_table(results):
    """Each image's size, what it holds by place and its largest file; the stack's
    total counts each layer once (an image built FROM the base shares its bytes)."""
    base = results.get("image_base") or {}
    built_on = set(base.get("built_on", []))
    contents = results.get("image_contents", {})
    places = list(next(iter(contents.values()))["bytes"]) if contents else []
    rows = []
    for name, size in results["images"].items():
        held = contents.get(name, {})
        cells = [f"{held['bytes'][place] / MB:.1f}" if held else "" for place in places]
        largest = ", ".join(f"{path} {n / MB:.1f}" for path, n in held.get("largest", [])[:2])
        on = "the base" if name in built_on else "scratch"
        rows.append((f"`{name}`", on, f"{size / MB:.1f}", *cells, largest))
    if built_on:
        once = f"{base['bytes'] / MB:.1f}"
        rows.append((f"the base image `{base['image']}`, once", "", once, *[""] * len(places), ""))
    total = stack_image_bytes(results)
    rows.append(("**the stack's images, each layer once**", "", f"**{total / MB:.1f}**", *[""] * len(places), ""))
    return table(["image", "FROM", "MB", *places, "largest files (MB)"], rows)


def first_request_ms(runs):
    """(the first request's p50, the steady state's p50, their difference) in ms over
    the replicas' runs (bench/first.py: the second request is left out of the steady state)."""
    first = statistics.median(run[0] for run in runs)
    steady = statistics.median(statistics.median(run[2:]) for run in runs)
    return first * 1000, steady * 1000, (first - steady) * 1000


def first_requests_table(results):
    rows = []
    for mode, entry in results["first_requests"].items():
        first_ms, steady_ms, extra_ms = first_request_ms(entry["runs"])
        each = ", ".join(f"{run[0] * 1000:.0f}" for run in entry["runs"])
        rows.append((mode, f"{first_ms:.1f}", each, f"{steady_ms:.1f}", f"{extra_ms:+.1f}"))
    headers = ["mode", "first request, p50 (ms)", "each replica's first (ms)", "steady state, p50 (ms)", "extra (ms)"]
    return table(headers, rows)


def _memory_rows(label, procs):
    rows = []
    for p in procs:
        uss = f"{p['uss_kib'] / 1024:.1f}" if "uss_kib" in p else "n/a"
        rows.append((label, p["role"], p["threads"], f"{p['rss_kib'] / 1024:.1f}", f"{p['pss_kib'] / 1024:.1f}", uss))
    return rows


def memory_table(results):
    rows = []
    for container, procs in results["memory_stack"].items():
        rows += _memory_rows(f"replica `{container}` after perfload", procs)
    for container, procs in results.get("memory_after_throughput", {}).items():
        rows += _memory_rows(f"replica `{container}` after throughput", procs)
    if results.get("perfload_raw"):
        rows += _memory_rows("raw uwsgi after perfload", results["perfload_raw"]["memory"])
    return table(["process", "role", "threads", "RSS (MiB)", "PSS (MiB)", "USS (MiB)"], rows)


def _server_ms(entry):
    value = per_request_ms(entry, SERVERS)
    return "n/a" if value is None else f"{value:.1f}"


def _variant_row(label, read, write, procs):
    return (
        label,
        f"{read['rps']:.1f}",
        ms(read["p99"]),
        _server_ms(read),
        f"{write['rps']:.1f}",
        ms(write["p99"]),
        _server_ms(write),
        len(procs),
        f"{max(p['rss_kib'] for p in procs) / 1024:.1f}" if procs else "",
        f"{sum(p['pss_kib'] for p in procs) / 1024:.1f}" if procs else "",
    )


def variants_table(results):
    d = results["defaults"]
    base_read, base_write = run(results, "direct", "read"), run(results, "direct", "write")
    rows = []
    if base_read and base_write:
        base_workers = workers(results["memory_after_throughput"])
        rows.append(_variant_row(f"{d['processes']}×{d['threads']} (default)", base_read, base_write, base_workers))
    for v in results.get("variants", []):
        procs = [p for p in v["memory"] if p["role"] == "worker"]
        rows.append(_variant_row(f"{v['processes']}×{v['threads']}", v["read"], v["write"], procs))
    header = ["processes × threads", "read req/s", "read p99 (ms)", "read: server CPU ms / request", "write req/s"]
    header += ["write p99 (ms)", "write: server CPU ms / request", "workers", "largest worker RSS (MiB)"]
    return table([*header, "workers' PSS total (MiB)"], rows)


# --- 7. size curves ----------------------------------------------------------------------


def _p(entry):
    return f"{ms(entry['p50'])} / {ms(entry['p95'])}"


def size_table(steps):
    queries = list(steps[0]["queries"])
    rows = [
        (
            s["providers"],
            s["trees"],
            f"{s['api_seconds_per_100']:.2f}",
            f"{s['sql_clone_providers']} in {s['sql_clone_seconds']:.1f} s",
            s["candidates"],
            *(_p(s["queries"][q]) for q in queries),
            _p(s["in_tree"]),
            _p(s["put_allocations"]),
            f"{s['db_bytes'] / MIB:.1f}",
            f"{s['replicas_rss_kib'] / 1024:.0f}",
        )
        for s in steps
    ]
    header = [
        "providers",
        "trees",
        "API load (s per 100 providers)",
        "cloned in SQL",
        "candidates",
        *(f"`{q}` p50 / p95 (ms)" for q in queries),
        "`in_tree` p50 / p95 (ms)",
        "`PUT /allocations` p50 / p95 (ms)",
        "database (MiB)",
        "replicas' RSS (MiB)",
    ]
    return table(header, rows)


def slope_text(value):
    return "none: one size" if value is None else f"{value:.2f}"


def growth_table(curves, growth):
    """Each operation's slope on a log-log plot of cost against providers, per shape."""
    shapes = list(curves)
    names = []
    for shape in shapes:
        names += [n for n in growth[shape] if n not in names]
    rows = []
    for name in names:
        cells = []
        for shape in shapes:
            cells.append(slope_text(growth[shape].get(name)) if name in growth[shape] else "")
        rows.append((name, *cells))
    return table(["operation", *(f"slope, {s}" for s in shapes)], rows)


def options_table(curves):
    rows = []
    for shape, curve in curves.items():
        providers = curve["steps"][-1]["providers"]
        for variant, entry in curve["options"].items():
            for query, r in entry.items():
                rows.append((shape, providers, variant, f"`{query}`", r["candidates"], r["calls"], _p(r)))
    return table(["shape", "providers", "placement option", "query", "candidates", "calls", "p50 / p95 (ms)"], rows)


def rest_table(results):
    """Section 4: the stack's containers at rest after the perfload, RSS and PSS by service."""
    rest = results.get("memory_at_rest")
    if not rest:
        return ""
    rows = [
        (service, e["containers"], e["processes"], f"{e['rss_kib'] / 1024:.1f}", f"{e['pss_kib'] / 1024:.1f}")
        for service, e in sorted(rest.items())
    ]
    total = [sum(e[k] for e in rest.values()) for k in ("containers", "processes", "rss_kib", "pss_kib")]
    rows.append(("**total**", total[0], total[1], f"{total[2] / 1024:.1f}", f"{total[3] / 1024:.1f}"))
    return table(["service", "containers", "processes", "RSS (MiB)", "PSS (MiB)"], rows)
