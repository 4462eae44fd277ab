"""docs/benchmark.png from one run's results: six panels beside docs/benchmark.md's tables.

matplotlib is imported only when a plot is drawn (`pip install placedock[bench]`):
the report's text renders without it.
"""

from placedock.commands.bench.tables import (
    GOAL_COLD_START_S,
    GOAL_FRONT_DOOR_RATIO,
    GOAL_RAW_SLOWDOWN,
    ordered,
    run,
    slope_text,
    workers,
)

# The perfload on the other databases, in the order the run takes them, and
# their colours (p50, p95).
OTHER_DATABASES = [("galera", ("tab:purple", "plum")), ("postgres", ("tab:green", "lightgreen"))]


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
    for database, color in OTHER_DATABASES:
        if results.get(f"perfload_{database}"):
            labels.append(f"stack on\n{database}")
            values.append(results[f"perfload_{database}"]["seconds"])
            colors.append(color[0])
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
    for database, (p50_color, p95_color) in OTHER_DATABASES:
        other = results.get(f"perfload_{database}")
        if other:
            series += [(f"{database} p50", other, "p50", p50_color), (f"{database} p95", other, "p95", p95_color)]
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
    return list(dict.fromkeys(r["target"] for r in ordered(results["throughput"])))


def _plot_throughput(ax, results):
    targets = _targets(results)
    for i, (mix, color) in enumerate((("read", "tab:green"), ("write", "tab:orange"))):
        ys = [run(results, t, mix)["rps"] for t in targets]
        xs = [x + (i - 0.5) * 0.4 for x in range(len(targets))]
        _bar_labels(ax, ax.bar(xs, ys, 0.4, label=f"{mix} mix", color=color), "{:.0f}")
        direct = run(results, "direct", mix)
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
        ys = [run(results, t, mix)[key] * 1000 for t in targets]
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

    def pss(procs):
        return f"\nworkers' PSS {sum(p['pss_kib'] for p in procs) / 1024:.0f} MiB" if procs else ""

    rows = [
        (
            f"{d['processes']}×{d['threads']} (default)" + pss(workers(results["memory_after_throughput"])),
            run(results, "direct", "read"),
            run(results, "direct", "write"),
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


def write_sizes_plot(results, path):
    """docs/benchmark-sizes.png: section 7's curves, log–log, flat solid and nested dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from placedock.commands.bench.sizes import growth, operations

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    fig.suptitle(f"placedock: cost against providers (log–log) — {results['machine']['date']}", fontsize=12)
    panels = {
        "GET /allocation_candidates": (axes[0][0], "p50 (s)"),
        "GET /resource_providers?in_tree": (axes[0][1], "p50 (s)"),
        "PUT /allocations": (axes[0][1], "p50 (s)"),
        "load through the API": (axes[1][0], "s per 100 providers"),
        "database size": (axes[1][1], "bytes"),
        "replicas' RSS": (axes[1][1], "bytes (RSS: KiB × 1024)"),
    }
    for shape, curve in results["sizes"].items():
        steps = curve["steps"]
        xs = [s["providers"] for s in steps]
        slopes = growth(steps)
        style = "-" if shape == "flat" else "--"
        for name, ys in operations(steps):
            ax, unit = next(v for k, v in panels.items() if name.startswith(k))
            if name == "replicas' RSS":
                ys = [y * 1024 for y in ys]
            label = f"{shape}: {name} (slope {slope_text(slopes[name])})"
            ax.plot(xs, ys, style, marker="o", label=label)
            ax.set_ylabel(unit)
    for ax in (axes[0][0], axes[0][1], axes[1][0], axes[1][1]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("providers")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)
