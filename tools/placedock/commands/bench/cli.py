"""Benchmark placedock in one run and write docs/benchmark.md and docs/benchmark.png.

    tox -e bench                                   # the full run (its duration is in the report)
    tox -e bench -- --providers 50 --duration 3    # a quick one while developing
    tox -e bench -- --report-from docs/benchmark.json   # re-render the report only

It builds the images (cached layers), then, on its own compose project
(placedock-bench, loopback ports 28778/28404/23306), measures:

1. cold start: `up -d --scale placement=N` on fresh volumes until every replica
   is healthy and UP in haproxy; then one replica's `docker restart` until
   haproxy has it UP again;
2. perfload (placement's gate job, in placeload 0.4.0's shape) through the
   front door: load time, then the gate's allocation-candidate queries;
3. the same perfload against the reference: upstream placement under uwsgi on
   the host (same packages, same uwsgi.ini settings) against the same mariadb;
4. throughput of a read mix and a write mix at fixed concurrency through the
   front door with N..1 replicas, one replica directly, and haproxy directly;
5. uwsgi process/thread variants on one replica (and whether UWSGI_* from the
   environment is honoured);
6. image sizes and uwsgi worker memory;
7. the perfload again on the same stack over a 3-node Galera cluster
   (compose.galera.yaml), and over PostgreSQL (compose.postgres.yaml), so
   what each database costs placement is read off one run;
8. how cost grows with the cloud's size: 1k, 4k and 16k providers, flat and
   nested, half their capacity allocated (sizes.py), and placement's
   candidate options at the largest size.

`--quick` is a smoke check of every phase but the other databases, the raw
reference and the variants: the smallest size only, short mixes, and the
report written under $TMPDIR, not over docs/.

The stack is torn down (`down -v`) at the end, also on failure, Ctrl-C or
SIGTERM, and the raw uwsgi is stopped. The report is written only when every
phase finished. It measures and reports; it asserts no goal.
"""

import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from placedock.api.client import wait_ready
from placedock.cli import command_parser
from placedock.commands.bench import cpu, first, plot, raw, report, sizes
from placedock.stack.compose import (
    ROOT,
    Stack,
    build_settings,
    compose_command,
    container_env,
    container_health,
    container_ip,
    container_memory,
    haproxy_stats,
    image_files,
    image_layer_ids,
    image_size,
    remove,
    uwsgi_memory,
    wait_for_up,
)
from placedock.traffic import mixes, perfload

RAW_PORT = 28779
# The benchmark's own compose project, on loopback ports of its own (front
# door 28778, haproxy stats 28404, mariadb 23306), so that the test project
# and anyone's dev stack are left alone: only containers of this project are
# ever started, stopped, inspected or sent traffic.
PROJECT = "placedock-bench"
PORTS = {"PLACEMENT_PORT": 28778, "HAPROXY_STATS_PORT": 28404, "BENCH_MARIADB_PORT": 23306, "KEYSTONE_PORT": 25000}
START = time.monotonic()


def log(message):
    print(f"bench [{time.monotonic() - START:6.1f}s] {message}", flush=True)


def build_parser():
    parser = command_parser("bench", __doc__)
    parser.add_argument("--replicas", type=int, default=3, help="replicas for cold start and perfload (default 3)")
    parser.add_argument("--providers", type=int, default=1000, help="perfload providers (default 1000)")
    parser.add_argument("--perfload-concurrency", type=int, default=16, help="providers loaded at once (default 16)")
    parser.add_argument("--ac-calls", type=int, default=20, help="timed calls per allocation-candidates query")
    parser.add_argument("--ac-warmup", type=int, default=6, help="untimed calls before them (default 6)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads of the mixes (default 8)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per mix and target (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each mix (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="slices the one-replica targets take in turn per mix (default 3)"
    )
    parser.add_argument("--max-requests", type=int, default=200_000, help="request cap per mix and target")
    parser.add_argument(
        "--variants",
        default="1x8,4x2",
        help="uwsgi PROCESSESxTHREADS variants to compare on one replica, comma-separated ('' for none)",
    )
    parser.add_argument(
        "--raw-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "placedock-bench-venv",
        help="venv of the raw reference, kept between runs (default $TMPDIR/placedock-bench-venv)",
    )
    parser.add_argument("--raw-python", default=raw.default_python(), help="interpreter of the raw reference venv")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw reference")
    parser.add_argument("--no-galera", action="store_true", help="skip the perfload on the Galera stack")
    parser.add_argument("--no-postgres", action="store_true", help="skip the perfload on the PostgreSQL stack")
    parser.add_argument(
        "--sizes", default="1000,4000,16000", help="providers at each step of the size curves ('' for none)"
    )
    parser.add_argument("--shapes", default="flat,nested", help="shapes of the size curves (flat, nested)")
    parser.add_argument(
        "--size-api-providers", type=int, default=150, help="providers created through the API at each size step"
    )
    parser.add_argument("--size-calls", type=int, default=10, help="timed calls per query at each size step")
    parser.add_argument(
        "--size-budget", type=float, default=30.0, help="seconds after which a size step's query stops its calls"
    )
    parser.add_argument(
        "--first-replicas",
        type=int,
        default=3,
        help="fresh one-worker replicas per auth mode whose first requests are timed (default 3; 0 for none)",
    )
    parser.add_argument("--first-calls", type=int, default=12, help="requests timed on each of them (default 12)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke check: the smallest size, 3 s mixes, no raw/galera/postgres/variants; report under $TMPDIR",
    )
    parser.add_argument("--no-build", action="store_true", help="use the images as they are")
    parser.add_argument(
        "--no-cpu",
        action="store_true",
        help="measure without CPU accounting (where no container's cgroup, v1 or v2, can be read)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where benchmark.md/.png/.json go")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit of each wait and of each perfload")
    parser.add_argument(
        "--report-from",
        type=Path,
        metavar="JSON",
        help="measure nothing: write benchmark.md/.png again from a run's saved benchmark.json",
    )
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes.split(",")[0]
        args.duration = min(args.duration, 3.0)
        args.no_raw = args.no_galera = args.no_postgres = True
        args.variants = ""
        args.first_replicas = min(args.first_replicas, 1)
        if args.out == ROOT / "docs":
            args.out = Path(tempfile.gettempdir()) / "placedock-bench-quick"
    args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    args.shapes = [x.strip() for x in args.shapes.split(",") if x.strip()]
    unknown = set(args.shapes) - set(sizes.SHAPES)
    if unknown:
        parser.error(f"--shapes: no shape {', '.join(sorted(unknown))} (there are {', '.join(sizes.SHAPES)})")
    args.variants = [tuple(int(x) for x in v.split("x")) for v in args.variants.split(",") if v.strip()]
    return args


# --- machine ------------------------------------------------------------------------


def _out(*cmd):
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine(args, compose):
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown",
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": _out("nproc"),
        "cpu": cpu,
        "memory_gib": int(meminfo["MemTotal"].split()[0]) / 2**20,
        "kernel": platform.release(),
        "docker": _out("docker", "version", "--format", "{{.Server.Version}}"),
        "compose": _out(*compose, "version", "--short"),
        "client_python": platform.python_version(),
        "raw_python": "" if args.no_raw else _out(args.raw_python, "--version"),
        "git": _out("git", "-C", str(ROOT), "describe", "--always", "--dirty"),
        "loadavg_start": loadavg(),
        # Other people's stacks share the cores: count their containers (only count them).
        "other_containers": len(set(_out("docker", "ps", "-q").split()) - set(_ours())),
    }


def _ours():
    return _out("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").split()


def loadavg():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_stack(database="mariadb", mode="noauth"):
    """compose.yaml [+ compose.keystone.yaml] [+ compose.galera.yaml or compose.postgres.yaml]
    + compose.bench.yaml, as placedock-bench."""
    return Stack(mode, project=PROJECT, extra=["compose.bench.yaml"], database=database, quiet=True, **PORTS)


# --- phases -------------------------------------------------------------------------


def cold_start(stack, replicas, timeout):
    """`up -d --scale placement=N` on fresh volumes until N healthy replicas are UP in haproxy."""
    stack.down()
    t0 = time.monotonic()
    stack.up(replicas, build=False, wait=False)
    up_returned = time.monotonic() - t0
    wait_for_up(replicas, timeout, url=stack.stats_url, poll=0.1)
    all_up = time.monotonic() - t0
    health = [container_health(c) for c in stack.container_ids("placement")]
    return {"replicas": replicas, "up_returned": up_returned, "all_up": all_up, "health": health}


def restart_replica(stack, replicas, timeout):
    """`docker restart` one replica; poll haproxy every 0.1 s until it is UP again."""
    container = stack.container_ids("placement")[0]
    ip = container_ip(container)
    t0 = time.monotonic()
    proc = subprocess.Popen(["docker", "restart", container], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    returned = down_at = None
    while time.monotonic() - t0 < timeout:
        now = time.monotonic() - t0
        if returned is None and proc.poll() is not None:
            returned = now
        servers = _servers_or_empty(stack)
        mine = [row["status"] for row in servers if row["addr"].rsplit(":", 1)[0] == ip]
        up = mine[0] == "UP" if mine else sum(1 for row in servers if row["status"] == "UP") == replicas
        if down_at is None and not up:
            down_at = now
        if down_at is not None and up and returned is not None:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise TimeoutError(f"restarted replica not back UP in haproxy within {timeout:g}s")
    if proc.returncode:
        raise RuntimeError(f"docker restart failed: {proc.stderr.read().decode()}")
    return {"restart_returned": returned, "seen_down": down_at, "back_up": time.monotonic() - t0}


def _servers_or_empty(stack):
    try:
        return haproxy_stats(url=stack.stats_url)
    except OSError:
        return []


def load_perfload(url, args, meter):
    """Load the providers (CPU metered), then time the gate's allocation-candidate queries."""
    meter.start()
    result = perfload.perfload(url, args.providers, args.perfload_concurrency, args.timeout)
    result["cpu"] = meter.stop()
    if result["timed_out"] or not result["created"]:
        raise RuntimeError(f"perfload against {url} failed: {result['failure_count']} failures {result['failures']}")
    if result["failure_count"] or result["retries"]:
        log(f"  {result['retries']} retried requests, {result['failure_count']} providers failed: {result['failures']}")
    result["allocation_candidates"] = mixes.allocation_candidates(url, args.ac_calls, args.ac_warmup)
    return result


def at_rest(stack):
    """Every container of the stack, idle: its processes' RSS and PSS, by service."""
    out = {}
    for service in stack.services():
        for container in stack.container_ids(service):
            entry = out.setdefault(service, {"containers": 0, "processes": 0, "rss_kib": 0, "pss_kib": 0})
            entry["containers"] += 1
            for key, value in container_memory(container).items():
                entry[key] += value
    return out


def stack_memory(stack):
    return {c[:12]: uwsgi_memory(c) for c in stack.container_ids("placement")}


def raw_reference(stack, args, meter, workdir):
    """Perfload against placement under uwsgi on the host, against the bench mariadb."""
    (mariadb,) = stack.container_ids("mariadb")
    db_url = container_env(mariadb)["BENCH_RAW_DATABASE__CONNECTION"]
    ref = raw.RawPlacement(ROOT, args.raw_venv, RAW_PORT, db_url, workdir)
    try:
        ref.db_sync()
        started = ref.start(args.timeout)
        log(f"raw: uwsgi on {ref.url} answering after {started:.1f}s; perfload")
        meter.raw_pid = ref.proc.pid
        result = load_perfload(ref.url, args, meter)
        result["memory"] = ref.memory()
    finally:
        meter.raw_pid = None
        ref.stop()
    result["url"] = ref.url
    return result


def measure(targets, mix, providers, args, meter, rounds=1):
    """Drive `mix` against each (name, url) target for args.duration seconds in all.

    With several targets the time is cut into `rounds` slices taken in turn (the
    order reversed every other round), so that other load on the shared machine
    falls on every target alike. Each target is warmed up once, uncounted.
    """
    slice_seconds = args.duration / rounds
    for _, url in targets:
        if args.warmup > 0:
            mixes.drive(url, mix, providers, args.concurrency, args.warmup, args.max_requests, seed=99)
    samples = {name: [] for name, _ in targets}
    cpu_parts = {name: [] for name, _ in targets}
    for r in range(rounds):
        for name, url in targets if r % 2 == 0 else targets[::-1]:
            meter.start()
            samples[name].append(
                mixes.drive(url, mix, providers, args.concurrency, slice_seconds, args.max_requests, seed=r)
            )
            cpu_parts[name].append(meter.stop())
    results = {}
    for name, _ in targets:
        result = mixes.summarize(mix, args.concurrency, samples[name])
        result.update(target=name, cpu=cpu.merge(cpu_parts[name]))
        results[name] = result
        log(
            f"  {name:<16} {mix:<5} {result['rps']:7.1f} req/s  p50 {result['p50'] * 1000:6.1f} ms  "
            f"p99 {result['p99'] * 1000:6.1f} ms  errors {result['errors']}"
        )
    return results


def throughput(stack, providers, args, meter):
    """The read and write mixes against every target; N replicas down to 1."""
    runs = []
    for replicas in range(args.replicas, 0, -1):
        stack.scale(replicas)
        wait_for_up(replicas, args.timeout, url=stack.stats_url)
        log(f"throughput: {replicas} replica(s) UP")
        if replicas > 1:
            targets = [(f"front door N={replicas}", stack.placement_url)]
            rounds = 1
        else:
            (replica,) = stack.container_ids("placement")
            (haproxy,) = stack.container_ids("haproxy")
            targets = [
                ("front door N=1", stack.placement_url),
                ("direct", f"http://{container_ip(replica)}:8778"),
                ("haproxy IP", f"http://{container_ip(haproxy)}:8778"),
            ]
            rounds = args.rounds
        for mix in mixes.MIXES:
            for result in measure(targets, mix, providers, args, meter, rounds).values():
                result["replicas"] = replicas
                runs.append(result)
    return runs


def env_override_probe(stack, args):
    """Does UWSGI_PROCESSES/UWSGI_THREADS from the environment beat uwsgi.ini? Count what runs."""
    wanted = (1, 8)
    name = stack.run_detached("placement", env={"UWSGI_PROCESSES": str(wanted[0]), "UWSGI_THREADS": str(wanted[1])})
    try:
        wait_ready(f"http://{container_ip(name)}:8778", args.timeout)
        workers = [p for p in uwsgi_memory(name) if p["role"] == "worker"]
    finally:
        remove(name)
    seen = (len(workers), max(p["threads"] for p in workers))
    return {"asked": list(wanted), "seen": list(seen), "honoured": seen == wanted}


def variants(stack, providers, args, meter):
    """Each PROCESSESxTHREADS variant on a one-off replica, driven directly (command-line flags)."""
    out = []
    for processes, threads in args.variants:
        name = stack.run_detached(
            "placement",
            "uwsgi",
            "--ini",
            "/etc/placement/uwsgi.ini",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        )
        label = f"{processes}x{threads}"
        try:
            url = f"http://{container_ip(name)}:8778"
            wait_ready(url, args.timeout)
            entry = {"processes": processes, "threads": threads}
            for mix in mixes.MIXES:
                entry[mix] = measure([(f"variant {label}", url)], mix, providers, args, meter)[f"variant {label}"]
            entry["memory"] = uwsgi_memory(name)
        finally:
            remove(name)
        out.append(entry)
    return out


# The other databases the perfload runs on, after the single mariadb: what
# the log says, and the container whose InnoDB counters are read (Galera's
# writer; PostgreSQL has none).
OTHER_DATABASES = {
    "galera": ("a 3-node Galera cluster (compose.galera.yaml)", "galera-1"),
    "postgres": ("PostgreSQL (compose.postgres.yaml)", None),
}


def fresh_up(stack, args, replicas=None):
    """`down -v`, then up with args.replicas (or replicas), until haproxy has them all UP; the seconds the up took."""
    replicas = replicas or args.replicas
    stack.down()
    t0 = time.monotonic()
    stack.up(replicas, build=False, wait=False)
    wait_for_up(replicas, args.timeout, url=stack.stats_url, poll=0.1)
    return time.monotonic() - t0


def database_perfload(args, meter, database):
    """The perfload, as above, through the front door of the same stack on
    another database: a 3-node Galera cluster (one writer behind the database
    front door), or PostgreSQL."""
    stack = bench_stack(database)
    try:
        # The same project: this also removes the stack before it and its volumes.
        all_up = fresh_up(stack, args)
        log(f"  {database}: all {args.replicas} UP in haproxy after {all_up:.1f}s; perfload")
        # Never the removed stack's mariadb (with --no-galera it would still be set).
        innodb = OTHER_DATABASES[database][1]
        (meter.mariadb,) = stack.container_ids(innodb) if innodb else (None,)
        result = load_perfload(stack.placement_url, args, meter)
        result["all_up"] = all_up
        result.pop("providers")
    finally:
        meter.mariadb = None
        stack.down()
    return result


def size_curves(args):
    """Each shape on a fresh stack, grown through args.sizes; placement's options at the largest."""
    out = {}
    for name in args.shapes:
        shape = sizes.SHAPES[name]
        stack = bench_stack()
        try:
            fresh_up(stack, args)
            log(f"sizes: {name}, {', '.join(str(n) for n in args.sizes)} providers, {args.replicas} replicas")
            steps = sizes.measure_shape(stack, shape, args.sizes, args, log)
            log(f"sizes: {name} at {steps[-1]['providers']} providers, placement's candidate options (one-off replica)")
            out[name] = {"steps": steps, "options": sizes.option_variants(stack, shape, args, log)}
        finally:
            stack.down()
    return out


def images(stack):
    """Each image's size, and the base image the builds name (PLACEDOCK_BASE_IMAGE)
    with the images whose first layers are its own, stored once."""
    names = stack.image_names()
    base = build_settings()[0]
    layers = image_layer_ids(base)
    return {
        "images": {name: image_size(name) for name in names},
        "image_base": {
            "image": base,
            "bytes": image_size(base),
            "built_on": [name for name in names if image_layer_ids(name)[: len(layers)] == layers],
        },
        "image_contents": {name: contents(image_files(name)) for name in names},
    }


# What an image holds, by where it lives (the first prefix a path starts with).
PLACES = {
    "the venv": ("/opt/venv/",),
    "Python's standard library": ("/usr/lib/python3",),
    "shared libraries": ("/usr/lib/x86_64-linux-gnu/", "/usr/lib/aarch64-linux-gnu/", "/usr/lib/lib"),
    "programs": ("/usr/bin/", "/usr/sbin/", "/usr/local/bin/"),
    "/usr/share": ("/usr/share/",),
}


def contents(files):
    """An image's bytes by place, and its largest files."""
    places = dict.fromkeys([*PLACES, "the rest"], 0)
    for path, size in files.items():
        place = next((name for name, prefixes in PLACES.items() if path.startswith(prefixes)), "the rest")
        places[place] += size
    largest = sorted(files.items(), key=lambda item: -item[1])[:3]
    return {"bytes": places, "largest": largest, "files": len(files)}


def run(args):
    compose = compose_command()
    stack = bench_stack()
    meter = cpu.CpuMeter(PROJECT, PORTS.values(), enabled=not args.no_cpu)
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine(args, compose)}
    results["defaults"] = report.defaults(ROOT)
    try:
        with tempfile.TemporaryDirectory(prefix="placedock-bench-") as workdir:
            if not args.no_build:
                t0 = time.monotonic()
                log("building images (docker compose build, cached layers)")
                stack.build()
                if args.first_replicas:
                    bench_stack(mode="keystone").build()
                results["build_seconds"] = time.monotonic() - t0
            if not args.no_raw:
                pip_log = args.raw_venv.with_name(args.raw_venv.name + "-pip.log")
                log(f"raw reference venv {args.raw_venv} (pip's log: {pip_log})")
                t0 = time.monotonic()
                reused = raw.ensure_venv(ROOT, args.raw_venv, args.raw_python, pip_log)
                results["raw_venv"] = {"reused": reused, "seconds": time.monotonic() - t0}

            log(f"cold start: up -d --scale placement={args.replicas} on fresh volumes")
            results["cold_start"] = cold_start(stack, args.replicas, args.timeout)
            log(f"  all {args.replicas} UP in haproxy after {results['cold_start']['all_up']:.1f}s")
            (meter.mariadb,) = stack.container_ids("mariadb")
            results["restart"] = restart_replica(stack, args.replicas, args.timeout)
            log(f"  restarted replica back UP after {results['restart']['back_up']:.1f}s")

            log(f"perfload: {args.providers} providers through the front door ({args.replicas} replicas)")
            results["perfload_stack"] = load_perfload(stack.placement_url, args, meter)
            log(f"  loaded in {results['perfload_stack']['seconds']:.1f}s")
            results["memory_stack"] = stack_memory(stack)
            time.sleep(5)  # the perfload's last requests done, the stack idle
            results["memory_at_rest"] = at_rest(stack)

            if not args.no_raw:
                log("perfload: raw reference")
                results["perfload_raw"] = raw_reference(stack, args, meter, Path(workdir))
                log(f"  loaded in {results['perfload_raw']['seconds']:.1f}s")

            providers = results["perfload_stack"]["providers"]
            log(f"throughput: {args.concurrency} client threads, {args.duration:g}s per mix and target")
            results["throughput"] = throughput(stack, providers, args, meter)
            results["memory_after_throughput"] = stack_memory(stack)

            log("uwsgi: UWSGI_* environment override probe")
            results["env_override"] = env_override_probe(stack, args)
            if args.variants:
                log(f"uwsgi variants: {', '.join(f'{p}x{t}' for p, t in args.variants)}")
                results["variants"] = variants(stack, providers, args, meter)
            results.update(images(stack))
            if args.first_replicas:
                results["first_requests"] = first.measure(
                    lambda mode: bench_stack(mode=mode),
                    lambda stack: fresh_up(stack, args, replicas=1),
                    args.first_calls,
                    args.first_replicas,
                    args.timeout,
                    log,
                )
            if args.sizes:
                results["sizes"] = size_curves(args)
            skip = {"galera": args.no_galera, "postgres": args.no_postgres}
            for database, (what, _) in OTHER_DATABASES.items():
                if not skip[database]:
                    log(f"perfload: the same stack on {what}")
                    results[f"perfload_{database}"] = database_perfload(args, meter, database)
                    log(f"  loaded in {results[f'perfload_{database}']['seconds']:.1f}s")
    finally:
        log("tearing down placedock-bench (down -v)")
        stack.down()
    results["total_seconds"] = time.monotonic() - START
    results["loadavg_end"] = loadavg()
    for key in ("perfload_stack", "perfload_raw"):
        if key in results:
            results[key].pop("providers", None)
    return results


def write_report(results, out):
    out.mkdir(parents=True, exist_ok=True)
    report.write_markdown(results, out / "benchmark.md", png_name="benchmark.png")
    plot.write_plot(results, out / "benchmark.png")
    written = ["benchmark.md", "benchmark.png"]
    if results.get("sizes"):
        plot.write_sizes_plot(results, out / "benchmark-sizes.png")
        written.append("benchmark-sizes.png")
    print(f"bench: wrote {', '.join(str(out / name) for name in written)}", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.report_from:
        write_report(json.loads(args.report_from.read_text()), args.out)
        return 0
    # SIGTERM (tox or CI stopping us) unwinds like Ctrl-C: the finally blocks tear down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        results = run(args)
    except cpu.Unreadable as error:
        print(f"placedock bench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log("interrupted; the stack was torn down")
        return 130
    args.out.mkdir(parents=True, exist_ok=True)
    # The results first: a report that fails to render can be written again with --report-from.
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, args.out)
    log(f"done in {results['total_seconds']:.0f}s")
    return 0
