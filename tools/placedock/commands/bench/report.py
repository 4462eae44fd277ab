"""docs/benchmark.md from one run's results: report.md.tmpl's prose around tables.py's tables.

defaults() reads, during a run, the settings the report explains from the files
that set them (and the built image); render() needs the results alone, so
`placedock bench --report-from` runs without docker. The plot is plot.py's.
"""

import configparser
import re
import string
from pathlib import Path

from placedock.commands.bench import raw, sizes, tables
from placedock.stack.compose import server_slots, settings_file
from placedock.traffic import mixes, perfload

TEMPLATE = Path(__file__).with_name("report.md.tmpl")
BLOCK = re.compile(r"^\[\[([^\]\n]+)\]\]$", re.M)


class ReportError(Exception):
    """The template asks for a block or a value that the results do not give."""


# --- the repo's settings ----------------------------------------------------------


def _ini(path, section):
    """One section of an INI file as uwsgi and mariadb read them: bare flags, repeated keys, no interpolation."""
    parser = configparser.ConfigParser(
        allow_no_value=True,
        strict=False,
        interpolation=None,
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=("#", ";"),
    )
    parser.read_string(path.read_text(), source=str(path))
    return parser[section]


def defaults(root):
    """The settings the report explains, read from the files that set them (and the built image: docker)."""
    uwsgi = _ini(root / "placement" / "uwsgi.ini", "uwsgi")
    env = settings_file(root / "env" / "placement.env")
    mariadb = _ini(root / "mariadb" / "placedock.cnf", "mysqld")
    processes, threads = raw.image_workers()
    return {
        "processes": processes,
        "threads": threads,
        "socket": "http11-socket" if "http11-socket" in uwsgi else "http-socket",
        "socket_timeout": uwsgi.get("socket-timeout"),
        "pool": int(env["OS_PLACEMENT_DATABASE__MAX_POOL_SIZE"]),
        "overflow": int(env["OS_PLACEMENT_DATABASE__MAX_OVERFLOW"]),
        "pool_timeout": env.get("OS_PLACEMENT_DATABASE__POOL_TIMEOUT"),
        "max_connections": int(mariadb["max_connections"]),
        "server_slots": server_slots(),
    }


# --- the template --------------------------------------------------------------------


class Template:
    """report.md.tmpl's [[name]] blocks, each filled with str.format; `used` names those filled so far."""

    def __init__(self, text=None, source=TEMPLATE.name):
        parts = BLOCK.split(TEMPLATE.read_text() if text is None else text)
        self.blocks = {name: body.strip("\n") for name, body in zip(parts[1::2], parts[2::2], strict=True)}
        self.source = source
        self.used = set()

    def fill(self, name, values):
        if name not in self.blocks:
            raise ReportError(f"{self.source} has no block [[{name}]]")
        self.used.add(name)
        body = self.blocks[name]
        formatter = string.Formatter()
        for _, field, _, _ in formatter.parse(body):
            if field is None:
                continue
            try:
                formatter.get_field(field, (), values)
            except (KeyError, IndexError, TypeError, AttributeError):
                raise ReportError(f"{self.source} [[{name}]]: these results give no value for {{{field}}}") from None
        try:
            return body.format_map(values)
        except (ValueError, TypeError) as error:
            raise ReportError(f"{self.source} [[{name}]]: {error}") from error


def render(results, png_name="benchmark.png", template=None):
    """The whole page, from the results alone."""
    t = template or Template()
    try:
        values = {**results, **_figures(results, t), "png_name": png_name}
    except KeyError as error:
        raise ReportError(f"the results have no {error.args[0]!r}, which the report needs") from error
    return re.sub(r"\n{3,}", "\n\n", t.fill("report", values)).strip("\n") + "\n"


def write_markdown(results, path, png_name):
    path.write_text(render(results, png_name))


# --- the figures the prose quotes, derived from the results ---------------------------------


def _figures(results, t):
    runs = tables.ordered(results["throughput"])
    return {
        "minutes": results["total_seconds"] / 60,
        "arguments": ", ".join(f"`{k}={v}`" for k, v in results["args"].items() if k != "out"),
        "machine_table": tables.machine_table(results),
        **_goals(results, t),
        **_perfload(results, t),
        **_throughput(results, runs, t),
        "health": ", ".join(results["cold_start"]["health"]),
        "start_table": tables.start_table(results),
        "images_table": tables.images_table(results),
        "memory_table": tables.memory_table(results),
        "rest": t.fill("at rest", {"table": tables.rest_table(results)}) if results.get("memory_at_rest") else "",
        "first_requests": _first_requests(results, t),
        "verdict": t.fill("honoured" if results["env_override"]["honoured"] else "not honoured", {}),
        "variants_table": tables.variants_table(results),
        **_defaults(results, t),
        "sizes_section": _sizes(results, t),
    }


def _goals(results, t):
    rows = tables.goals(results)
    missed = {key for key, _, _, ok, _ in rows if not ok}
    held = next((c for name, c in results.get("image_contents", {}).items() if "/placement:" in name), None)
    places = held["bytes"].items() if held else ()
    values = {"places": ", ".join(f"{n / tables.MB:.1f} MB {place}" for place, n in places)}
    items = [
        t.fill(f"missed {key}", values)
        for key in ("front door", "image", "stack images", "worker memory")
        if key in missed and (key != "image" or held)
    ]
    return {
        "goals_table": tables.goals_table(rows),
        "missed": t.fill("missed", {"items": "\n".join(items)}) if items else "",
    }


def _first_requests(results, t):
    entry = results.get("first_requests")
    if not entry:
        return ""
    runs = next(iter(entry.values()))["runs"]
    values = {"table": tables.first_requests_table(results), "replicas": len(runs), "calls": len(runs[0])}
    return t.fill("first requests", values)


def _cpu_table(t, label_header, labelled_entries):
    return tables.cpu_table(label_header, labelled_entries) or t.fill("no cpu accounting", {})


def _perfload(results, t):
    targets = tables.perfload_targets(results)
    stack = results["perfload_stack"]
    queries = stack["allocation_candidates"]
    everywhere = set.intersection(*(set(chunk) for chunk in perfload.TRAIT_CHUNKS))
    retried = [
        t.fill("retried", {"target": label, "samples": "; ".join(f"`{x}`" for x in r["retry_samples"])})
        for label, r in targets
        if r["retry_samples"]
    ]
    return {
        "inventory": ", ".join(f"{rc} {spec['total']}" for rc, spec in perfload.INVENTORY.items()),
        "aggregate_count": len(perfload.AGGREGATES),
        "trait_count": len(perfload.TRAITS),
        "traits": ", ".join(perfload.TRAITS),
        "traits_every": ", ".join(sorted(everywhere)),
        "requests_per_provider": stack["requests"] / stack["created"],
        "warmup_calls": next(iter(queries.values()))["warmup_calls"],
        "queries": "\n".join(t.fill("query", {"name": name, "query": q["query"]}) for name, q in queries.items()),
        "perfload_table": tables.perfload_table(results),
        "perfload_cpu_table": _cpu_table(t, ["target"], [((label,), r) for label, r in targets]),
        "databases": "\n\n".join(
            t.fill(name, results) for name in ("galera", "postgres") if results.get(f"perfload_{name}")
        ),
        "perfload_retries": perfload.RETRIES,
        "retried": "".join(retried),
    }


def _throughput(results, runs, t):
    ledger = tables.refused_key(runs) == "refused"
    costs = []
    for mix in ("read", "write"):
        front, direct = tables.run(results, "front door N=1", mix), tables.run(results, "direct", mix)
        if front and direct:
            front_ms = tables.per_request_ms(front, tables.FRONT)
            server_ms = tables.per_request_ms(direct, tables.SERVERS)
            if front_ms is not None and server_ms:
                share = server_ms / (server_ms + front_ms)
                values = {"mix": mix, "front_ms": front_ms, "server_ms": server_ms, "share": share}
                costs.append(t.fill("front door cost item", values))
    errors = [f"`{e}`" for r in runs for e in r["error_samples"]]
    return {
        "duration": float(results["args"]["duration"]),
        "warmup": float(results["args"]["warmup"]),
        "in_tree_query": mixes.small_candidates_query("<random provider>"),
        "accounting": t.fill("accounting ledger" if ledger else "accounting before the ledger", {}),
        "interleaved": ", ".join(x for x in tables.TARGET_ORDER[2:] if any(r["target"] == x for r in runs)),
        "throughput_table": tables.throughput_table(runs),
        "ratio_table": tables.ratio_table(results, runs),
        "kind_tables": "\n\n".join(
            t.fill("kind table", {"mix": mix, "table": tables.kind_table(runs, mix)}) for mix in ("read", "write")
        ),
        "throughput_cpu_table": _cpu_table(t, ["target", "mix"], [((r["target"], r["mix"]), r) for r in runs]),
        "front_door_cost": t.fill("front door cost", {"items": "\n".join(costs)}) if costs else "",
        "error_samples": t.fill("error samples", {"samples": "; ".join(errors)}) if errors else "",
    }


def _cpu_split(results, t):
    """The replica's and mariadb's CPU per request served directly, and which of them fills the cores."""
    parts = []
    for mix in ("read", "write"):
        direct = tables.run(results, "direct", mix)
        server = direct and tables.per_request_ms(direct, tables.SERVERS)
        db = direct and tables.per_request_ms(direct, ("mariadb",))
        if server and db is not None:
            parts.append(t.fill("cpu split part", {"mix": mix, "server_ms": server, "db_ms": db}))
    if not parts:
        return ""
    direct = tables.run(results, "direct", "read")
    python_bound = tables.per_request_ms(direct, tables.SERVERS) > tables.per_request_ms(direct, ("mariadb",))
    bound = t.fill("python bound" if python_bound else "database bound", {})
    return t.fill("cpu split", {"parts": "; ".join(parts), "bound": bound})


def _defaults(results, t):
    d = results["defaults"]
    errors = sum(r["errors"] for r in results["throughput"])
    per_replica = d["processes"] * (d["pool"] + d["overflow"])
    ratios = []
    for mix in ("read", "write"):
        hap, direct, front = (tables.run(results, target, mix) for target in ("haproxy IP", "direct", "front door N=1"))
        if hap and direct and front:
            values = {"mix": mix, "haproxy_ip": tables.x(hap["rps"], direct["rps"])}
            ratios.append(t.fill("haproxy ratio", {**values, "front_door": tables.x(front["rps"], direct["rps"])}))
    return {
        "cpu_split": _cpu_split(results, t),
        "pool_spare": d["pool"] - d["threads"],
        "per_replica": per_replica,
        "all_replicas": d["server_slots"] * per_replica,
        "pool_waits": t.fill("pool errors", {"errors": errors}) if errors else t.fill("pool no waits", results),
        "haproxy_ratios": "; ".join(ratios) or t.fill("not measured", {}),
    }


def _sizes(results, t):
    """Section 7, when the run grew the data set (results before it have no 'sizes')."""
    curves = results.get("sizes")
    if not curves:
        return ""
    growth = {shape: sizes.growth(curve["steps"]) for shape, curve in curves.items()}
    shapes = "\n\n".join(
        t.fill("sizes shape", {"shape": shape, "table": tables.size_table(curve["steps"])})
        for shape, curve in curves.items()
    )
    expect = []
    for shape, curve in curves.items():
        last = curve["steps"][-1]
        unlimited, limited = sizes.SHAPES[shape].option_queries
        options = curve["options"]
        best = min(options, key=lambda v: options[v][unlimited]["p50"])
        # An option is named only where it beats the defaults beyond the calls' spread.
        beyond = options[best][unlimited]["p95"] < options["defaults"][unlimited]["p50"]
        values = {
            "shape": shape,
            "providers": last["providers"],
            "unlimited": unlimited,
            "unlimited_ms": last["queries"][unlimited]["p50"] * 1000,
            "limited": limited,
            "limited_ms": last["queries"][limited]["p50"] * 1000,
            "slope": tables.slope_text(growth[shape][f"GET /allocation_candidates {unlimited} p50"]),
            "best": best,
            "best_ms": options[best][unlimited]["p50"] * 1000,
            "default_ms": options["defaults"][unlimited]["p50"] * 1000,
            "in_tree_ms": last["in_tree"]["p50"] * 1000,
            "put_ms": last["put_allocations"]["p50"] * 1000,
            "db_mib": last["db_bytes"] / tables.MIB,
            "pool_mib": last["buffer_pool_bytes"] / tables.MIB,
            "best_env": " ".join(f"{k}={v}" for k, v in sizes.OPTION_VARIANTS.get(best, {}).items()),
        }
        values["pool"] = t.fill(
            "sizes pool fits" if last["db_bytes"] <= last["buffer_pool_bytes"] else "sizes pool short", values
        )
        values["option"] = t.fill("sizes option" if beyond else "sizes no option", values)
        expect.append(t.fill("sizes expect", values))
    worse = [
        f"{name} ({shape}, {tables.slope_text(value)})"
        for shape, slopes in growth.items()
        for name, value in slopes.items()
        if value is not None and value > sizes.SUPERLINEAR
    ]
    superlinear = (
        t.fill("sizes superlinear", {"operations": "; ".join(worse)})
        if worse
        else t.fill("sizes linear", {"superlinear": sizes.SUPERLINEAR})
    )
    first = next(iter(curves.values()))["steps"][0]
    values = {
        "shapes": shapes,
        "api_providers": first["api_providers"],
        "growth_table": tables.growth_table(curves, growth),
        "options_table": tables.options_table(curves),
        "expect": "\n".join(expect),
        "superlinear": superlinear,
        "nested_query": sizes.NESTED_QUERY,
        "flat_consumers": sizes.FLAT_CONSUMERS,
        "tree_providers": sizes.Nested.per_unit,
        "largest": max(s["providers"] for curve in curves.values() for s in curve["steps"]),
        "nova_limit": sizes.NOVA_LIMIT,
        "sizes_png": "benchmark-sizes.png",
        "size_steps": results["args"]["sizes"].strip("[]"),
    }
    return t.fill("sizes", {**results, **values})
