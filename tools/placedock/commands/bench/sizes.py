"""How cost grows with the cloud's size: the same measurements at 1k, 4k and
16k providers, flat and nested, with allocations filling half the capacity.

Two shapes, each on a fresh stack (`down -v`), grown in steps:

- **flat**: compute nodes in placeload's shape (perfload.py: the inventory,
  one to three aggregates and traits), each with 4 consumers using half of
  its VCPU, MEMORY_MB and DISK_GB. A unit is 3 providers, one per placeload
  aggregate/trait chunk.
- **nested**: the tree of upstream's nested perfload job (gate/gabbits/
  nested-perfload.yaml): a compute node with DISK_GB and
  COMPUTE_VOLUME_MULTI_ATTACH, two NUMA nodes (VCPU, MEMORY_MB; numa1 has
  CUSTOM_FOO), two devices under each (FPGA, or VGPU); 7 providers. Two
  consumers use half of it (the disk, a CPU of numa0 with memory and its FPGA,
  half of numa1 and one of its FPGAs), so the job's query, whose groups must
  share a subtree under numa1, still finds one candidate per tree.

At each step, about `--size-api-providers` are created through the front door, each
request as nova or placeload sends it, and timed: that is the load cost at
that size (seconds per 100 providers). The rest of the step is cloned from
the first of them in SQL (`INSERT ... SELECT` over MariaDB's sequence
engine, in one transaction: the providers with their inventories, traits and
aggregates, and the consumers with their allocations), because creating 16k
providers through a 2-core API would take the whole run. Every step is then
checked through the API: the candidates counted must be one per provider
(flat) or per tree (nested), and a clone's usages must be the template's.

Then, timed through the front door: each shape's allocation-candidates
queries (upstream's gate queries as they are, unlimited, and as nova sends
them, limit=1000), `GET /resource_providers?in_tree=` a random root, and
`PUT /allocations` of candidates' allocation requests (deleted after,
untimed); the database's size and every replica's RSS. At the largest size,
placement's options that bear on candidates are tried on a one-off replica.
"""

import math
import random
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from placedock.api.client import wait_ready
from placedock.stack.compose import container_ip, remove, uwsgi_memory
from placedock.traffic import perfload
from placedock.traffic.mixes import AC_QUERIES, AC_RESOURCES, percentile
from placedock.traffic.perfload import REQUEST_TIMEOUT, session

PROJECT_ID = str(uuid.UUID(int=1))
USER_ID = str(uuid.UUID(int=2))

# Upstream's nested perfload query (gate/perfload-nested-runner.sh).
NESTED_QUERY = (
    "resources=DISK_GB:10&required=COMPUTE_VOLUME_MULTI_ATTACH"
    "&resources_COMPUTE=VCPU:1,MEMORY_MB:256&required_COMPUTE=CUSTOM_FOO"
    "&resources_FPGA=FPGA:1&group_policy=none&same_subtree=_COMPUTE,_FPGA"
)
# Consumers on each flat provider, each with an eighth of its inventory.
FLAT_CONSUMERS = 4
# What nova's scheduler adds: [scheduler]max_placement_results, 1000 by default.
NOVA_LIMIT = 1000

# Placement's options that bear on allocation candidates, tried at the largest size
# on a one-off replica: untimed calls (its 2 processes each served some), then timed.
OPTION_WARMUP = 3
OPTION_CALLS = 4
OPTION_VARIANTS = {
    "defaults": {},
    "breadth-first": {"OS_PLACEMENT__ALLOCATION_CANDIDATES_GENERATION_STRATEGY": "breadth-first"},
    "max_allocation_candidates=1000": {"OS_PLACEMENT__MAX_ALLOCATION_CANDIDATES": "1000"},
    "optimize_for_wide_provider_trees": {"OS_WORKAROUNDS__OPTIMIZE_FOR_WIDE_PROVIDER_TREES": "true"},
}


def consumer_body(allocations):
    """PUT /allocations/{consumer}'s body for a new consumer: `allocations` as placement lists them."""
    return {
        "allocations": allocations,
        "project_id": PROJECT_ID,
        "user_id": USER_ID,
        "consumer_generation": None,
        "consumer_type": "INSTANCE",
    }


class Failed(RuntimeError):
    """A step's data set is not what it should be, or a request failed."""


def _check(resp, what):
    if resp.status_code >= 300:
        raise Failed(f"{what}: {resp.status_code} {resp.text[:300]}")
    return resp


class Api:
    """Requests as placement's clients send them; one session per thread."""

    def __init__(self, url):
        self.url = url
        self.sessions = {}

    def _s(self):
        key = threading.get_ident()
        if key not in self.sessions:
            self.sessions[key] = session()
        return self.sessions[key]

    def fresh(self):
        """New connections from here on: those idle past haproxy's keep-alive timeout may be closing."""
        for s in self.sessions.values():
            s.close()
        self.sessions.clear()

    def call(self, method, path, body=None, what=None):
        resp = self._s().request(method, self.url + path, json=body, timeout=REQUEST_TIMEOUT)
        return _check(resp, what or f"{method} {path}")

    def provider(self, name, inventories, traits=(), aggregates=(), parent=None):
        uu = str(uuid.uuid4())
        body = {"uuid": uu, "name": f"{name}-{uu}"}
        if parent:
            body["parent_provider_uuid"] = parent
        self.call("POST", "/resource_providers", body)
        generation = 0
        if inventories:
            body = {"resource_provider_generation": generation, "inventories": inventories}
            generation = self.call("PUT", f"/resource_providers/{uu}/inventories", body).json()[
                "resource_provider_generation"
            ]
        if aggregates:
            body = {"resource_provider_generation": generation, "aggregates": list(aggregates)}
            generation = self.call("PUT", f"/resource_providers/{uu}/aggregates", body).json()[
                "resource_provider_generation"
            ]
        if traits:
            body = {"resource_provider_generation": generation, "traits": list(traits)}
            self.call("PUT", f"/resource_providers/{uu}/traits", body)
        return uu

    def allocate(self, allocations):
        consumer = str(uuid.uuid4())
        body = consumer_body({rp: {"resources": resources} for rp, resources in allocations.items()})
        self.call("PUT", f"/allocations/{consumer}", body)
        return consumer


class Flat:
    name = "flat"
    per_unit = 3  # one provider per placeload aggregate/trait chunk
    trees_per_unit = 3  # each its own tree: one candidate each
    queries = {
        **AC_QUERIES,
        f"resources only, limit={NOVA_LIMIT}": f"{AC_RESOURCES}&limit={NOVA_LIMIT}",
    }
    count_query = "resources only"
    # (unlimited, limited): tried with placement's options, and quoted so by the report.
    option_queries = ("resources only", f"resources only, limit={NOVA_LIMIT}")

    @staticmethod
    def prepare(api):
        pass

    @staticmethod
    def create(api, _index):
        providers, consumers = [], []
        for i in range(3):
            rp = api.provider(
                "cn", perfload.INVENTORY, traits=perfload.TRAIT_CHUNKS[i], aggregates=perfload.AGG_CHUNKS[i]
            )
            providers.append(rp)
            for _ in range(FLAT_CONSUMERS):  # half of VCPU 32, MEMORY_MB 8192, DISK_GB 8192
                consumers.append(api.allocate({rp: {"VCPU": 4, "MEMORY_MB": 1024, "DISK_GB": 1024}}))
        return providers, consumers


class Nested:
    name = "nested"
    per_unit = 7
    trees_per_unit = 1  # one candidate per tree
    queries = {"nested (gate)": NESTED_QUERY, f"nested, limit={NOVA_LIMIT}": f"{NESTED_QUERY}&limit={NOVA_LIMIT}"}
    count_query = "nested (gate)"
    option_queries = tuple(queries)  # (unlimited, limited)

    @staticmethod
    def prepare(api):
        api.call("PUT", "/traits/CUSTOM_FOO")

    @staticmethod
    def create(api, _index):
        cn = api.provider("cn", {"DISK_GB": {"total": 20480}}, traits=["COMPUTE_VOLUME_MULTI_ATTACH"])
        numa0 = api.provider(
            "numa0",
            {"VCPU": {"total": 4, "reserved": 2}, "MEMORY_MB": {"total": 2048, "min_unit": 512, "step_size": 256}},
            traits=["HW_NUMA_ROOT"],
            parent=cn,
        )
        fpga0 = api.provider("fpga0", {"FPGA": {"total": 1}}, parent=numa0)
        pgpu0 = api.provider("pgpu0", {"VGPU": {"total": 8}}, parent=numa0)
        numa1 = api.provider(
            "numa1",
            {"VCPU": {"total": 4}, "MEMORY_MB": {"total": 2048, "min_unit": 256, "max_unit": 1024}},
            traits=["HW_NUMA_ROOT", "CUSTOM_FOO"],
            parent=cn,
        )
        fpga1_0 = api.provider("fpga1_0", {"FPGA": {"total": 1}}, parent=numa1)
        fpga1_1 = api.provider("fpga1_1", {"FPGA": {"total": 1}}, parent=numa1)
        consumers = [
            api.allocate(
                {cn: {"DISK_GB": 10240}, numa0: {"VCPU": 1, "MEMORY_MB": 1024}, fpga0: {"FPGA": 1}, pgpu0: {"VGPU": 4}}
            ),
            api.allocate({numa1: {"VCPU": 2, "MEMORY_MB": 1024}, fpga1_0: {"FPGA": 1}}),
        ]
        return [cn, numa0, fpga0, pgpu0, numa1, fpga1_0, fpga1_1], consumers


SHAPES = {"flat": Flat, "nested": Nested}


# --- SQL ---------------------------------------------------------------------------------


def sql(mariadb, statements, timeout=600):
    """Run SQL in the placement database as the server's root (its socket, inside the container)."""
    done = subprocess.run(
        ["docker", "exec", "-i", "-u", "root", mariadb, "mariadb", "-N", "-B", "placement"],
        input=statements,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise Failed(f"SQL in {mariadb[:12]}: {done.stderr.strip()}")
    return done.stdout


def clone_sql(providers, consumers, copies):
    """`copies` clones of a unit (its providers, in order, and its consumers) in one transaction.

    Clone k's provider j gets id MAX(id) + (k-1)*T + j + 1, so its root and parent
    are found by the same rule; clone k's consumer c gets a UUID of the batch's
    own random prefix whose last 12 hex digits are (k-1)*C + c + 1.
    """
    t, c = len(providers), len(consumers)
    new_rp = f"@base + (s.seq - 1) * {t} + {{}}.j + 1"
    prefix = str(uuid.uuid4())[:24]
    new_consumer = f"CONCAT('{prefix}', LPAD(HEX((s.seq - 1) * {c} + {{}}.c + 1), 12, '0'))"
    seq = f"seq_1_to_{copies} s"
    # Only UUIDs (parsed back, so nothing else can be in the text) and ints go into the SQL.
    tmpl = ", ".join(f"('{uuid.UUID(uu)}', {j})" for j, uu in enumerate(providers))
    tmplc = ", ".join(f"('{uuid.UUID(uu)}', {i})" for i, uu in enumerate(consumers))
    return f"""
START TRANSACTION;
CREATE TEMPORARY TABLE tmpl_uuid (uuid VARCHAR(36), j INT);
INSERT INTO tmpl_uuid VALUES {tmpl};
CREATE TEMPORARY TABLE tmpl (id INT PRIMARY KEY, j INT);
INSERT INTO tmpl SELECT rp.id, u.j FROM resource_providers rp JOIN tmpl_uuid u ON u.uuid = rp.uuid;
CREATE TEMPORARY TABLE tmplr LIKE tmpl;
INSERT INTO tmplr SELECT * FROM tmpl;
CREATE TEMPORARY TABLE tmplp LIKE tmpl;
INSERT INTO tmplp SELECT * FROM tmpl;
CREATE TEMPORARY TABLE tmplc (uuid VARCHAR(36) PRIMARY KEY, c INT);
INSERT INTO tmplc VALUES {tmplc};
SELECT COALESCE(MAX(id), 0) INTO @base FROM resource_providers FOR UPDATE;
INSERT INTO resource_providers (id, uuid, name, generation, root_provider_id, parent_provider_id, created_at)
  SELECT {new_rp.format("m")}, UUID(), CONCAT('clone-', {new_rp.format("m")}), rp.generation,
         {new_rp.format("r")}, IF(rp.parent_provider_id IS NULL, NULL, {new_rp.format("p")}), NOW()
  FROM {seq} JOIN tmpl m JOIN resource_providers rp ON rp.id = m.id
  JOIN tmplr r ON r.id = rp.root_provider_id LEFT JOIN tmplp p ON p.id = rp.parent_provider_id;
INSERT INTO inventories (resource_provider_id, resource_class_id, total, reserved, min_unit, max_unit,
                         step_size, allocation_ratio, created_at)
  SELECT {new_rp.format("m")}, i.resource_class_id, i.total, i.reserved, i.min_unit, i.max_unit,
         i.step_size, i.allocation_ratio, NOW()
  FROM {seq} JOIN tmpl m JOIN inventories i ON i.resource_provider_id = m.id;
INSERT INTO resource_provider_traits (trait_id, resource_provider_id, created_at)
  SELECT x.trait_id, {new_rp.format("m")}, NOW()
  FROM {seq} JOIN tmpl m JOIN resource_provider_traits x ON x.resource_provider_id = m.id;
INSERT INTO resource_provider_aggregates (resource_provider_id, aggregate_id, created_at)
  SELECT {new_rp.format("m")}, x.aggregate_id, NOW()
  FROM {seq} JOIN tmpl m JOIN resource_provider_aggregates x ON x.resource_provider_id = m.id;
INSERT INTO consumers (uuid, project_id, user_id, generation, consumer_type_id, created_at)
  SELECT {new_consumer.format("t")}, x.project_id, x.user_id, x.generation, x.consumer_type_id, NOW()
  FROM {seq} JOIN tmplc t JOIN consumers x ON x.uuid = t.uuid;
INSERT INTO allocations (resource_provider_id, consumer_id, resource_class_id, used, created_at)
  SELECT {new_rp.format("m")}, {new_consumer.format("t")}, a.resource_class_id, a.used, NOW()
  FROM {seq} JOIN tmplc t JOIN allocations a ON a.consumer_id = t.uuid JOIN tmpl m ON m.id = a.resource_provider_id;
COMMIT;
SELECT uuid FROM resource_providers WHERE id = @base + {t} * {copies};
"""  # noqa: S608 - UUIDs and ints only, above


def db_bytes(mariadb):
    """The placement database's data and indexes, after refreshing InnoDB's statistics."""
    sql(
        mariadb,
        "ANALYZE TABLE resource_providers, inventories, allocations, consumers, "
        "resource_provider_traits, resource_provider_aggregates;",
    )
    out = sql(
        mariadb,
        "SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = 'placement';",
    )
    return int(out.split()[-1])


def random_roots(mariadb, count):
    query = "SELECT uuid FROM resource_providers WHERE parent_provider_id IS NULL ORDER BY RAND() LIMIT %d;"
    out = sql(mariadb, query % int(count))
    return out.split()


# --- timing --------------------------------------------------------------------------------


def timed(fn, calls, warmup, budget):
    """Time calls of fn() after untimed warm-ups, stopping once `budget` seconds are spent."""
    for _ in range(warmup):
        fn()
    times = []
    started = time.monotonic()
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.monotonic() - started > budget:
            break
    return {"calls": len(times), "p50": percentile(times, 50), "p95": percentile(times, 95)}


def candidates(api, query):
    return api.call("GET", f"/allocation_candidates?{query}").json()


def time_queries(api, shape, args):
    out = {}
    for name, query in shape.queries.items():
        out[name] = timed(lambda q=query: candidates(api, q), args.size_calls, args.ac_warmup, args.size_budget)
        out[name]["query"] = query
    return out


def time_in_tree(api, roots, args):
    picks = iter(roots * (1 + (args.ac_warmup + args.size_calls * 3) // max(1, len(roots))))
    return timed(
        lambda: api.call("GET", f"/resource_providers?in_tree={next(picks)}"),
        args.size_calls * 3,
        args.ac_warmup,
        args.size_budget,
    )


def time_put_allocations(api, shape, args):
    """PUT the allocation requests of the shape's limited query for new consumers; then DELETE them, untimed."""
    query = next(q for name, q in shape.queries.items() if "limit=" in name)
    requests = candidates(api, query)["allocation_requests"]
    # Each request once: a tree's last free FPGA taken twice would be refused.
    random.Random(7).shuffle(requests)  # noqa: S311 - picks test data
    made = []

    def put():
        consumer = str(uuid.uuid4())
        api.call("PUT", f"/allocations/{consumer}", {**consumer_body(None), **requests.pop()})
        made.append(consumer)

    result = timed(put, min(args.size_calls * 3, len(requests) - args.ac_warmup), args.ac_warmup, args.size_budget)
    for consumer in made:
        api.call("DELETE", f"/allocations/{consumer}")
    return result


def replicas_rss_kib(stack):
    return sum(p["rss_kib"] for c in stack.container_ids("placement") for p in uwsgi_memory(c))


# --- one shape ---------------------------------------------------------------------------------


class Grower:
    """Grows one shape's data set step by step; keeps what the checks need."""

    def __init__(self, url, shape, mariadb):
        self.shape = shape
        self.mariadb = mariadb
        self.api = Api(url)
        self.providers = 0
        self.template = None

    def through_api(self, units, concurrency):
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            made = list(pool.map(lambda i: self.shape.create(self.api, i), range(units)))
        seconds = time.monotonic() - started
        self.providers += units * self.shape.per_unit
        self.template = self.template or made[0]
        return seconds

    def clone(self, copies):
        providers, consumers = self.template
        started = time.monotonic()
        last = sql(self.mariadb, clone_sql(providers, consumers, copies)).split()[-1]
        seconds = time.monotonic() - started
        self.providers += copies * len(providers)
        # A clone is what its template is, as placement reports it.
        mine = self.api.call("GET", f"/resource_providers/{providers[-1]}/usages").json()["usages"]
        theirs = self.api.call("GET", f"/resource_providers/{last}/usages").json()["usages"]
        if mine != theirs:
            raise Failed(f"{self.shape.name}: a clone's usages {theirs} are not its template's {mine}")
        return seconds

    @property
    def trees(self):
        return self.providers // self.shape.per_unit * self.shape.trees_per_unit

    def check_count(self, answer):
        """One candidate per tree (a flat provider is a tree of its own)."""
        got = len(answer["allocation_requests"])
        want = self.trees
        if got != want:
            raise Failed(f"{self.shape.name} at {self.providers} providers: {got} candidates, expected {want}")
        return got


def measure_shape(stack, shape, sizes, args, log):
    """Every step of one shape, on the stack given (fresh, up)."""
    (mariadb,) = stack.container_ids("mariadb")
    grower = Grower(stack.placement_url, shape, mariadb)
    shape.prepare(grower.api)
    steps = []
    for size in sizes:
        units = max(1, math.ceil(args.size_api_providers / shape.per_unit))
        api_seconds = grower.through_api(units, args.perfload_concurrency)
        api_providers = units * shape.per_unit
        copies = (size - grower.providers) // shape.per_unit
        clone_seconds = grower.clone(copies) if copies > 0 else 0.0
        log(
            f"  {shape.name} {grower.providers} providers: {api_providers} through the API in {api_seconds:.1f}s, "
            f"{copies * shape.per_unit} cloned in SQL in {clone_seconds:.1f}s"
        )
        grower.api.fresh()
        count = grower.check_count(candidates(grower.api, shape.queries[shape.count_query]))
        queries = time_queries(grower.api, shape, args)
        roots = random_roots(mariadb, 50)
        step = {
            "providers": grower.providers,
            "trees": grower.trees,
            "candidates": count,
            "api_providers": api_providers,
            "api_seconds": api_seconds,
            "api_seconds_per_100": api_seconds / api_providers * 100,
            "sql_clone_providers": copies * shape.per_unit,
            "sql_clone_seconds": clone_seconds,
            "queries": queries,
            "in_tree": time_in_tree(grower.api, roots, args),
            "put_allocations": time_put_allocations(grower.api, shape, args),
            "db_bytes": db_bytes(mariadb),
            "replicas_rss_kib": replicas_rss_kib(stack),
            "buffer_pool_bytes": int(sql(mariadb, "SELECT @@innodb_buffer_pool_size;").split()[-1]),
        }
        first = next(iter(queries))
        log(
            f"    {first} p50 {queries[first]['p50'] * 1000:.0f} ms, "
            f"in_tree p50 {step['in_tree']['p50'] * 1000:.1f} ms, "
            f"PUT p50 {step['put_allocations']['p50'] * 1000:.1f} ms, DB {step['db_bytes'] / 2**20:.0f} MiB"
        )
        steps.append(step)
    return steps


def option_variants(stack, shape, args, log):
    """The unlimited queries of the shape on a one-off replica, once per variant of placement's options."""
    out = {}
    for label, env in OPTION_VARIANTS.items():
        name = stack.run_detached("placement", env=env)
        try:
            url = f"http://{container_ip(name)}:8778"
            wait_ready(url, args.timeout)
            api = Api(url)
            entry = {}
            for query_name in shape.option_queries:
                query = shape.queries[query_name]
                result = timed(lambda a=api, q=query: candidates(a, q), OPTION_CALLS, OPTION_WARMUP, args.size_budget)
                result["candidates"] = len(candidates(api, query)["allocation_requests"])
                entry[query_name] = result
            out[label] = entry
            log(
                f"    {shape.name} {label}: " + ", ".join(f"{q} p50 {r['p50'] * 1000:.0f} ms" for q, r in entry.items())
            )
        finally:
            remove(name)
    return out


# --- growth --------------------------------------------------------------------------------


def slope(xs, ys):
    """The least-squares slope of log(y) against log(x): 1 is linear growth, 2 quadratic."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y and y > 0]
    if len(pairs) < 2:
        return None
    mx = statistics.fmean(x for x, _ in pairs)
    my = statistics.fmean(y for _, y in pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    return sum((x - mx) * (y - my) for x, y in pairs) / sxx if sxx else None


def operations(steps):
    """(name, [value per step]) of every operation the curves follow."""
    ops = [
        (f"GET /allocation_candidates {q} p50", [s["queries"][q]["p50"] for s in steps]) for q in steps[0]["queries"]
    ]
    ops += [
        ("GET /resource_providers?in_tree p50", [s["in_tree"]["p50"] for s in steps]),
        ("PUT /allocations p50", [s["put_allocations"]["p50"] for s in steps]),
        ("load through the API, s per 100 providers", [s["api_seconds_per_100"] for s in steps]),
        ("database size", [s["db_bytes"] for s in steps]),
        ("replicas' RSS", [s["replicas_rss_kib"] for s in steps]),
    ]
    return ops


# A slope above this is growth worse than linear, which the report names.
SUPERLINEAR = 1.1


def growth(steps):
    xs = [s["providers"] for s in steps]
    return {name: slope(xs, ys) for name, ys in operations(steps)}
