"""docs/benchmark.md is report.md.tmpl filled from docs/benchmark.json, with no
stack, no docker and no matplotlib: the committed page is what the committed
results render to (a template edit without regenerating fails here), a value
the results lack is named, every block of the template is reachable, the
template types no figure, and the commands it shows are the CLI's."""

import copy
import json
import re
import shlex

import pytest
from placedock.commands.bench import cli, raw, report, tables
from placedock.stack import compose as stack

DOCS = stack.ROOT / "docs"
REGENERATE = "placedock bench --report-from docs/benchmark.json"


@pytest.fixture
def results():
    return json.loads((DOCS / "benchmark.json").read_text())


def test_the_committed_report_is_what_the_committed_results_render_to(results):
    rendered = report.render(results, png_name="benchmark.png")
    assert rendered == (DOCS / "benchmark.md").read_text(), f"docs/benchmark.md is stale: run `{REGENERATE}`"


def test_the_report_says_which_run_it_came_from(results):
    rendered = report.render(results)
    machine = results["machine"]
    for fact in (machine["date"], f"`{machine['git']}`", f"{results['total_seconds'] / 60:.1f} minutes"):
        assert fact in rendered.split("## Machine")[0], fact
    assert "python tools/" not in rendered
    # A block's name, or a placeholder (`{name}`, `{name[key]}`, `{name:.1f}`); the
    # results' own text (an error message quoting a dict) may hold braces.
    left = re.findall(r"\[\[[\w ]+\]\]|\{\w+(?:\[\w+\])*(?::[^{}]*)?\}", rendered)
    assert left == [], "a block or a placeholder left unfilled"


@pytest.mark.parametrize(
    "path, named",
    [
        (("machine", "git"), r"\{machine\[git\]\}"),
        (("env_override", "seen"), r"\{env_override\[seen\]\[0\]\}"),
        (("perfload_galera", "all_up"), r"\[\[galera\]\].*\{perfload_galera\[all_up\]\}"),
        (("cold_start",), r"no 'cold_start'"),
    ],
)
def test_a_value_the_results_lack_is_named(results, path, named):
    *parents, key = path
    holder = results
    for parent in parents:
        holder = holder[parent]
    del holder[key]
    with pytest.raises(report.ReportError, match=named):
        report.render(results)


def test_a_placeholder_nothing_gives_is_named_with_its_block():
    template = report.Template("note\n[[greeting]]\nhello {who[name]}\n", source="test.tmpl")
    assert template.fill("greeting", {"who": {"name": "placement"}}) == "hello placement"
    with pytest.raises(report.ReportError, match=r"test\.tmpl \[\[greeting\]\].*\{who\[name\]\}"):
        template.fill("greeting", {"who": {}})
    with pytest.raises(report.ReportError, match=r"no block \[\[farewell\]\]"):
        template.fill("farewell", {})


def _other_branches(results):
    """The committed results, turned to take every branch: a run counted by
    the ledger, with failures, retries, an environment that is not honoured
    and a database-bound replica; and a run from before the ledger (409s
    counted as conflicts), with an environment that is honoured, no CPU
    accounting, no one-replica targets, no size curves, no stack at rest, no
    images' contents and no first requests."""
    ledger = copy.deepcopy(results)
    for entry in ledger["throughput"]:
        entry["refused"] = entry.pop("conflicts", entry.get("refused"))
    ledger["throughput"][-1].update(errors=2, error_samples=["PUT 500 boom"])
    ledger["perfload_stack"]["retry_samples"] = ["POST /resource_providers: 503 busy"]
    ledger["env_override"]["honoured"] = False
    direct_read = next(e for e in ledger["throughput"] if e["target"] == "direct" and e["mix"] == "read")
    direct_read["cpu"]["mariadb"] = 10 * direct_read["cpu"]["placement"]
    ledger["perfload_postgres"] = postgres_run(results)
    grown_badly(ledger["sizes"])
    # Images three times their size: both image goals missed.
    ledger["images"] = {name: size * 3 for name, size in ledger["images"].items()}
    bare = copy.deepcopy(results)
    # From before the size curves, the stack at rest, the images' contents and the first requests.
    for key in ("sizes", "memory_at_rest", "image_contents", "image_base", "first_requests"):
        bare.pop(key)
    bare["throughput"] = [e for e in bare["throughput"] if e["replicas"] > 1]
    for entry in bare["throughput"]:
        entry["conflicts"] = entry.pop("refused", entry.get("conflicts"))
    bare["env_override"]["honoured"] = True
    for entry in [*bare["throughput"], *(r for _, r in tables.perfload_targets(bare))]:
        entry["cpu"] = {}
    return ledger, bare


def grown_badly(curves):
    """Size curves whose unlimited queries grew quadratically, whose database outgrew the
    buffer pool, where no option helped the first shape and one clearly helped the others."""
    for index, curve in enumerate(curves.values()):
        steps = curve["steps"]
        for step in steps:
            step["buffer_pool_bytes"] = 1
            scale = (step["providers"] / steps[0]["providers"]) ** 2
            for query in step["queries"].values():
                query["p50"] = steps[0]["queries"][next(iter(step["queries"]))]["p50"] * scale
        for variant, entry in curve["options"].items():
            for r in entry.values():
                if index == 0:
                    r.update(p50=1.0, p95=1.0)
                else:
                    r.update(p50=1.0, p95=1.0) if variant == "defaults" else r.update(p50=0.1, p95=0.2)


def grown_linearly(results):
    """The committed results, every size curve's operations scaled in proportion to the providers."""
    linear = copy.deepcopy(results)
    for curve in linear["sizes"].values():
        steps = curve["steps"]
        for step in steps:
            scale = step["providers"] / steps[0]["providers"]
            for name, query in step["queries"].items():
                query["p50"] = steps[0]["queries"][name]["p50"] * scale
            for key in ("in_tree", "put_allocations"):
                step[key]["p50"] = steps[0][key]["p50"]
            step["api_seconds_per_100"] = steps[0]["api_seconds_per_100"]
            step["db_bytes"] = steps[0]["db_bytes"] * scale
            step["replicas_rss_kib"] = steps[0]["replicas_rss_kib"]
    return linear


def test_linear_growth_is_said_to_be_none_worse(results):
    assert "No operation grew faster than linearly" in report.render(grown_linearly(results))


def test_the_size_curves_name_quadratic_growth_and_a_short_buffer_pool(results):
    grown_badly(results["sizes"])
    rendered = report.render(results)
    assert "**Worse than linear**: GET /allocation_candidates" in rendered
    assert "2.00" in rendered.split("**Worse than linear**")[1].split("\n")[0]
    assert "**it outgrows mariadb's buffer pool**" in rendered


def test_an_option_is_named_only_beyond_the_calls_spread(results):
    grown_badly(results["sizes"])
    first, second = (f"- **{shape}," for shape in results["sizes"])
    expect = report.render(results).split(first)[1]
    assert "no option tried moved it" in expect.split(second)[0]
    assert "made it faster beyond the calls' spread" in expect.split(second)[1]


def postgres_run(results):
    """A perfload on PostgreSQL: the Galera one's, loaded in half the single
    mariadb's time with twice its requests, answering each query at a quarter
    of the single mariadb's p50 and a third of its p95."""
    postgres = copy.deepcopy(results["perfload_galera"])
    postgres["seconds"] = results["perfload_stack"]["seconds"] / 2
    postgres["requests"] = results["perfload_stack"]["requests"] * 2
    for name, query in postgres["allocation_candidates"].items():
        mariadb = results["perfload_stack"]["allocation_candidates"][name]
        query.update(p50=mariadb["p50"] / 4, p95=mariadb["p95"] / 3)
    return postgres


def test_the_postgres_perfload_is_a_row_and_its_ratio_to_mariadb_a_row(results):
    with_postgres = dict(results, perfload_postgres=postgres_run(results))
    rendered = report.render(with_postgres)
    (ratio,) = [line for line in rendered.splitlines() if line.startswith("| postgres ÷ single mariadb |")]
    queries = len(results["perfload_stack"]["allocation_candidates"])
    # load time, req/s while loading, then p50 / p95 of each query
    assert ratio.split(" | ")[4:6] == ["0.50×", "4.00×"], ratio
    assert ratio.split(" | ")[6 : 6 + queries] == ["0.25× / 0.33×"] * queries, ratio
    assert any(line.startswith("| stack on postgres (front door) |") for line in rendered.splitlines())
    assert "The postgres row is the same stack" in rendered


def test_without_a_postgres_run_the_report_names_no_postgres(results):
    """A run with --no-postgres (or from before it): no row, no ratio, no column, no note."""
    results.pop("perfload_postgres", None)
    assert "postgres" not in report.render(results).split("## Machine")[1]


def test_every_block_of_the_template_is_reachable(results):
    template = report.Template()
    for each in (results, *_other_branches(results), grown_linearly(results)):
        report.render(each, template=template)
    assert set(template.blocks) - template.used == set(), "blocks no results reach"
    ledger, _ = _other_branches(results)
    rendered = report.render(ledger)
    assert "| refused (409) |" in rendered and "**not honoured**" in rendered and "`PUT 500 boom`" in rendered


# Digits the prose may hold: section numbers, status codes, percentiles, versions, units.
NOT_FIGURES = [r"^## \d\. ", r"section \d", r"\b[2-5](?:00|09|xx)\b", r"\bp(?:50|95|99)\b", r"\b0\.4\.0\b"]
NOT_FIGURES += [r"10⁶", r"noauth2"]


def test_the_template_types_no_figure():
    """Every figure comes from the results: a number typed in the prose would outlive the run it was read off."""
    template = report.Template()
    for name, body in template.blocks.items():
        prose = re.sub(r"```.*?```", "", body, flags=re.S)
        prose = re.sub(r"\{[^{}]*\}|`[^`]*`", "", prose)
        for allowed in NOT_FIGURES:
            prose = re.sub(allowed, "", prose, flags=re.M)
        assert re.findall(r".{0,30}\d.{0,10}", prose) == [], f"[[{name}]] types a figure"


def test_the_commands_the_report_shows_are_the_cli_s(results, capsys):
    console = re.search(r"```console\n(.*?)```", report.render(results), re.S).group(1)
    commands = [line.split("#")[0].split()[1:] for line in console.splitlines()]
    assert ["tox", "-e", "bench"] in commands and ["placedock", "bench", "--help"] in commands
    assert shlex.split(REGENERATE) in commands
    for command in commands:
        if command[:2] == ["placedock", "bench"]:
            argv = command[2:]
        elif command[:4] == ["tox", "-e", "bench", "--"]:
            argv = command[4:]
        else:
            continue
        if argv == ["--help"]:
            with pytest.raises(SystemExit) as stopped:
                cli.parse_args(argv)
            assert stopped.value.code == 0
        else:
            args = cli.parse_args(argv)
            assert args.report_from is None or (stack.ROOT / args.report_from).is_file()


def test_defaults_reads_every_setting_the_template_quotes(monkeypatch):
    """During a run defaults() asks docker for the image's workers; here the repo's files alone."""
    monkeypatch.setattr(raw, "image_workers", lambda: (2, 6))
    found = report.defaults(stack.ROOT)
    quoted = set(re.findall(r"\{defaults\[(\w+)\]", report.TEMPLATE.read_text()))
    assert quoted <= set(found), f"the template quotes settings defaults() does not read: {quoted - set(found)}"
    assert None not in found.values()
    assert all(isinstance(found[key], int) for key in ("pool", "overflow", "max_connections", "server_slots"))


def test_the_stack_s_images_count_the_base_once_for_those_built_on_it():
    images = {"placement": 100, "mariadb": 150, "memcached": 30}
    on_base = {"images": images, "image_base": {"image": "base", "bytes": 80, "built_on": ["placement", "mariadb"]}}
    assert tables.stack_image_bytes(on_base) == 100 + 150 + 30 - 80
    from_scratch = {"images": images, "image_base": {"image": "base", "bytes": 80, "built_on": []}}
    assert tables.stack_image_bytes(from_scratch) == 280


def test_an_image_s_files_are_summed_by_where_they_live():
    files = {
        "/opt/venv/lib/python3.11/site-packages/placement/__init__.py": 5,
        "/usr/lib/python3.11/os.py": 3,
        "/usr/lib/x86_64-linux-gnu/libc.so.6": 7,
        "/usr/lib/libgalera_smm.so": 4,
        "/usr/sbin/mariadbd": 9,
        "/usr/share/mysql/errmsg.sys": 2,
        "/etc/passwd": 1,
    }
    held = cli.contents(files)
    assert held["bytes"] == {
        "the venv": 5,
        "Python's standard library": 3,
        "shared libraries": 11,
        "programs": 9,
        "/usr/share": 2,
        "the rest": 1,
    }
    assert held["largest"] == [
        ("/usr/sbin/mariadbd", 9),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", 7),
        (
            "/opt/venv/lib/python3.11/site-packages/placement/__init__.py",
            5,
        ),
    ]
    assert held["files"] == len(files)


def test_the_first_request_s_extra_is_over_the_steady_state_without_the_second():
    # Two replicas: first requests of 30 and 20 ms; the second request (a warming thread) left out.
    runs = [[0.030, 0.050, 0.004, 0.006, 0.005], [0.020, 0.040, 0.005, 0.005, 0.007]]
    first_ms, steady_ms, extra_ms = tables.first_request_ms(runs)
    assert (round(first_ms, 3), round(steady_ms, 3), round(extra_ms, 3)) == (25.0, 5.0, 20.0)
