"""Apply kubernetes/'s HorizontalPodAutoscaler to the placement service of a
compose stack (or of a swarm), as the Kubernetes controller would, and watch it.

    docker compose -f compose.yaml -f compose.autoscale.yaml up -d --wait
    placedock autoscale [--project placedock] [--csv F] [--png F] [--speed N]
    placedock autoscale --swarm [--service placedock_placement]

Every sync period (15 s) it reads each replica's CPU from its cgroup, asks the
HPA's algorithm for a replica count (its target, tolerance, behavior, min and
max: one source, kubernetes/base/placement.yaml), and scales: `docker compose
up --no-deps --no-recreate --scale placement=N placement` (the tested rescale:
no one-shot run again, nothing recreated), or `docker service scale` on a
swarm. It shows the HPA as `kubectl get hpa` does and what it did and why,
writes the timeline (--csv) and draws it (--png) when stopped (Ctrl-C, or
--for). --speed N divides every duration (sync period, windows, policy
periods, readiness delays) by N: the same settings, faster. An HPA it cannot
honour is refused with one line and nothing is changed. docs/autoscale.md.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from placedock.cli import command_parser
from placedock.commands.autoscale import hpa, observe, timeline
from placedock.stack import cgroup
from placedock.stack import compose as stack

# After this many syncs in a row with replicas running and no cgroup readable, stop.
UNREADABLE_SYNCS = 3


def build_parser():
    parser = command_parser("autoscale", __doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--project",
        default=os.environ.get("COMPOSE_PROJECT_NAME", "placedock"),
        help="the compose project (default: COMPOSE_PROJECT_NAME, else placedock)",
    )
    where.add_argument("--swarm", action="store_true", help="the stack on the swarm (PLACEDOCK_SWARM_HOST's manager)")
    parser.add_argument("--service", help="with --swarm: the service (default: placedock_placement)")
    parser.add_argument(
        "--hpa",
        type=Path,
        default=stack.ROOT / "kubernetes" / "base" / "placement.yaml",
        help="the HorizontalPodAutoscaler and its Deployment (default: kubernetes/base/placement.yaml)",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="divide every duration by this (default 1)")
    parser.add_argument(
        "--sync-period", type=float, help=f"seconds between syncs (default {hpa.SYNC_PERIOD:.0f}/speed)"
    )
    parser.add_argument("--csv", type=Path, help="write the timeline here, a row per sync")
    parser.add_argument("--png", type=Path, help="draw the timeline here when stopped")
    parser.add_argument("--for", dest="duration", type=float, help="stop after this many seconds")
    return parser


def settings(args):
    return hpa.Settings(
        sync_period=args.sync_period or hpa.SYNC_PERIOD / args.speed,
        initial_readiness_delay=hpa.INITIAL_READINESS_DELAY / args.speed,
        cpu_initialization_period=hpa.CPU_INITIALIZATION_PERIOD / args.speed,
    )


def prepare(args):
    """(spec, settings, target), or SystemExit with one line and nothing changed."""
    if args.speed <= 0 or (args.sync_period is not None and args.sync_period <= 0):
        raise hpa.Refused("--speed and --sync-period must be positive")
    if args.png and importlib.util.find_spec("matplotlib") is None:
        raise hpa.Refused("--png draws with matplotlib: pip install -c tools/constraints.txt -e 'tools[plot]'")
    spec = hpa.load(args.hpa, args.speed)
    slots = stack.server_slots()
    if spec.max_replicas > slots:
        raise hpa.Refused(
            f"{args.hpa}: maxReplicas {spec.max_replicas} is more than haproxy's {slots} server slots "
            "(haproxy/haproxy.cfg)"
        )
    if cgroup.cgroup_version() is None:
        raise observe.Unreadable(
            f"no CPU accounting under {cgroup.CGROUP_ROOT}: neither cgroup v1 (cpuacct) "
            "nor cgroup v2 (cgroup.controllers)"
        )
    if args.swarm:
        target = observe.SwarmTarget(args.service)
    else:
        try:
            target = observe.ComposeTarget(args.project)
        except LookupError as error:
            raise observe.Unreadable(f"{error}; bring it up first (docs/autoscale.md)") from None
    return spec, settings(args), target


def loop(spec, config, target, args, stop):
    controller = hpa.Autoscaler(spec, config)
    book = timeline.Timeline(args.csv)
    limit = target.cpu_limit_m()
    tty = sys.stdout.isatty()
    started = last = time.time()
    target.replicas(started)  # the first cgroup readings: rates from the next sync
    last_scale, unreadable = None, 0
    print(
        f"autoscale: {target.reference} by HorizontalPodAutoscaler/{spec.name} ({args.hpa}): cpu {spec.utilization}% "
        f"of {spec.request_m}m, {spec.min_replicas}-{spec.max_replicas} replicas, sync every {config.sync_period:g}s, "
        f"scale-down window {spec.scale_down.window:g}s; replicas' CPU limit {timeline.fmt(limit, 'm')}",
        flush=True,
    )
    try:
        while not stop.wait(max(0.0, last + config.sync_period - time.time())):
            now = time.time()
            replicas = target.replicas(now)
            current = target.current(replicas)
            running = [r for r in replicas if r.phase == "Running"]
            unreadable = unreadable + 1 if running and len(target.samples.unread) == len(running) else 0
            if unreadable >= UNREADABLE_SYNCS:
                raise observe.Unreadable(
                    f"cannot read the CPU of any replica ({len(running)} running) from its cgroup under "
                    f"{cgroup.CGROUP_ROOT} (cgroup v{cgroup.cgroup_version()}): is it on another host?"
                )
            decision = controller.decide(now, current, replicas)
            usage = [r.usage_m for r in running if r.usage_m is not None]
            served = target.requests(last, now)
            row = timeline.Row(
                t=now - started,
                replicas=current,
                ready=sum(1 for r in running if r.ready),
                sampled=len(usage),
                desired=decision.desired,
                utilization_pct=decision.proposal.utilization,
                cpu_mean_m=sum(usage) / len(usage) if usage else None,
                cpu_min_m=min(usage, default=None),
                cpu_max_m=max(usage, default=None),
                requests_per_s=len(served) / (now - last),
                p95_ms=timeline.p95([took for _, took in served]),
                errors_5xx=sum(1 for status, _ in served if status >= 500),
                reason=decision.reason,
            )
            if decision.desired != current and decision.desired > 0:
                target.scale(decision.desired)
                controller.scaled(now, current, decision.desired)
                last_scale = (
                    f"{time.strftime('%H:%M:%S', time.localtime(now))} (t={now - started:.0f}s) "
                    f"{current} -> {decision.desired}: {decision.reason}"
                )
                if not tty:
                    print(f"autoscale: scaled {last_scale}", flush=True)
            book.add(row)
            timeline.show(spec, target, row, last_scale, now - started, limit, tty)
            last = now
            if args.duration and now - started >= args.duration:
                break
    finally:
        book.close()
        if args.png and book.rows:
            title = (
                f"placedock autoscale: {target.reference}, cpu target {spec.utilization}% of {spec.request_m}m, "
                f"{spec.min_replicas}-{spec.max_replicas} replicas, sync {config.sync_period:g}s, speed {args.speed:g}"
            )
            timeline.plot(book.rows, spec, args.png, title)
            print(f"autoscale: the timeline drawn in {args.png}", flush=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        spec, config, target = prepare(args)
    except (hpa.Refused, observe.Unreadable) as error:
        print(f"autoscale: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        loop(spec, config, target, args, stop)
    except observe.Unreadable as error:
        print(f"autoscale: {error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or "").strip().splitlines()
        print(f"autoscale: {' '.join(map(str, error.cmd))}: exit {error.returncode}: {detail[-1:]}", file=sys.stderr)
        return 1
    return 0
