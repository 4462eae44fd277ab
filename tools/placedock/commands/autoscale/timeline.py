"""What the autoscaler shows and keeps: a view like `kubectl get hpa`
refreshed in the terminal (or one line per sync when the output is not a
terminal), the timeline as CSV, one row per sync, and the same drawn as a PNG:
replicas, per-replica CPU against the target, request rate and p95 latency
against time.

matplotlib is imported only when the plot is drawn (`pip install placedock[plot]`).
"""

import csv
import math
from dataclasses import dataclass, fields

CLEAR = "\033[H\033[2J"


@dataclass
class Row:
    """One sync of the autoscaler."""

    t: float  # seconds since the autoscaler started
    replicas: int  # the count before this sync's change
    ready: int
    sampled: int  # replicas with a CPU sample this sync
    desired: int
    utilization_pct: int | None  # over the replicas with a sample that counts
    cpu_mean_m: float | None  # per replica with a sample, millicores
    cpu_min_m: float | None
    cpu_max_m: float | None
    requests_per_s: float
    p95_ms: float | None
    errors_5xx: int
    reason: str


def p95(values):
    """The 95th percentile (nearest rank) of VALUES; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class Timeline:
    def __init__(self, csv_path=None):
        self.rows = []
        self.file = open(csv_path, "w", newline="") if csv_path else None  # noqa: SIM115 - kept open, flushed per row
        self.writer = csv.writer(self.file) if self.file else None
        if self.writer:
            self.writer.writerow([f.name for f in fields(Row)])
            self.file.flush()

    def add(self, row):
        self.rows.append(row)
        if self.writer:
            self.writer.writerow(
                [
                    f"{value:.2f}" if isinstance(value, float) else value
                    for value in (getattr(row, f.name) for f in fields(Row))
                ]
            )
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()


def show(spec, target, row, last_scale, age, limit_m, tty):
    """`kubectl get hpa` and below it what the controller did; on a terminal, in place."""
    current = "<unknown>" if row.utilization_pct is None else f"{row.utilization_pct}%"
    if not tty:
        print(
            f"autoscale: t={row.t:6.1f}s cpu {current}/{spec.utilization}% replicas {row.replicas} "
            f"(ready {row.ready}) desired {row.desired} | {row.requests_per_s:.0f} req/s, "
            f"p95 {fmt(row.p95_ms, 'ms')}, 5xx {row.errors_5xx} | {row.reason}",
            flush=True,
        )
        return
    lines = [
        f"{'NAME':<12}{'REFERENCE':<34}{'TARGETS':<18}{'MINPODS':<9}{'MAXPODS':<9}{'REPLICAS':<10}AGE",
        f"{spec.name:<12}{target.reference:<34}{'cpu: ' + current + '/' + str(spec.utilization) + '%':<18}"
        f"{spec.min_replicas:<9}{spec.max_replicas:<9}{row.replicas:<10}{int(age)}s",
        "",
        f"desired {row.desired}, ready {row.ready}; per replica cpu {fmt(row.cpu_mean_m, 'm')} "
        f"(min {fmt(row.cpu_min_m, 'm')}, max {fmt(row.cpu_max_m, 'm')}), target "
        f"{spec.request_m * spec.utilization // 100}m of a {spec.request_m}m request, limit {fmt(limit_m, 'm')}",
        f"front door: {row.requests_per_s:.1f} req/s, p95 {fmt(row.p95_ms, 'ms')}, 5xx {row.errors_5xx}",
        f"now: {row.reason}",
        f"last scale: {last_scale or 'none yet'}",
    ]
    print(CLEAR + "\n".join(lines), flush=True)


def fmt(value, unit):
    return "-" if value is None else f"{value:.0f}{unit}"


def plot(rows, spec, path, title):
    """The timeline as a PNG of three panels sharing the time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r.t for r in rows]
    fig, (ax_rep, ax_cpu, ax_req) = plt.subplots(3, 1, sharex=True, figsize=(10, 9))
    fig.suptitle(title, fontsize=11)
    ax_rep.step(t, [r.replicas for r in rows], where="post", label="replicas", color="tab:blue")
    ax_rep.step(t, [r.desired for r in rows], where="post", label="desired", color="tab:orange", linestyle="--")
    ax_rep.step(t, [r.ready for r in rows], where="post", label="ready", color="tab:green", alpha=0.6)
    ax_rep.set_ylabel("replicas")
    ax_rep.set_ylim(0, spec.max_replicas + 1)
    ax_rep.legend(loc="upper right")
    ax_rep.grid(alpha=0.3)

    sampled = [r for r in rows if r.cpu_mean_m is not None]
    ax_cpu.plot([r.t for r in sampled], [r.cpu_mean_m for r in sampled], label="mean per replica", color="tab:red")
    ax_cpu.fill_between(
        [r.t for r in sampled],
        [r.cpu_min_m for r in sampled],
        [r.cpu_max_m for r in sampled],
        color="tab:red",
        alpha=0.15,
        label="min–max",
    )
    ax_cpu.axhline(spec.request_m * spec.utilization / 100, color="black", linestyle=":", label="target")
    ax_cpu.axhline(spec.request_m, color="grey", linestyle="--", label="request (and the compose limit)")
    ax_cpu.set_ylabel("CPU (millicores)")
    ax_cpu.legend(loc="upper right")
    ax_cpu.grid(alpha=0.3)

    ax_req.plot(t, [r.requests_per_s for r in rows], color="tab:purple", label="requests/s")
    ax_req.set_ylabel("requests/s (front door)")
    ax_req.set_xlabel("seconds")
    ax_req.grid(alpha=0.3)
    ax_lat = ax_req.twinx()
    timed = [r for r in rows if r.p95_ms is not None]
    ax_lat.plot([r.t for r in timed], [r.p95_ms for r in timed], color="tab:brown", label="p95 latency")
    ax_lat.set_ylabel("p95 latency (ms)")
    handles = ax_req.get_legend_handles_labels()[0] + ax_lat.get_legend_handles_labels()[0]
    ax_req.legend(handles, [h.get_label() for h in handles], loc="upper right")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
