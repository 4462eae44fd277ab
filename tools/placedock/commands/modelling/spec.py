"""Read a scenario file: YAML, then the schema (tools/placedock/commands/modelling/schema.yaml), then
the references between its parts. Every error names the file, the line and the
field; nothing is sent to placement before a file has passed all three.

A Scenario also knows the UUIDs placement will hold for its names: each is a
uuid5 of the scenario's name and the thing's name, so loading again finds what
an earlier load created.
"""

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import os_resource_classes
import os_traits
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.yaml"
NAMESPACE = uuid.UUID("a4b1e7f0-6c1d-5e0b-9a57-0c1a2c3e4d5f")
# Placement's defaults for the inventory fields a file may leave out.
INVENTORY_DEFAULTS = {"reserved": 0, "min_unit": 1, "max_unit": 2147483647, "step_size": 1, "allocation_ratio": 1.0}
SHARING_TRAIT = "MISC_SHARES_VIA_AGGREGATE"
# The parameters of a request group; a suffix after one names the group.
GROUP_KEYS = ("resources", "required", "member_of", "in_tree")


class ScenarioError(Exception):
    """A file that cannot be loaded: one line per problem, each `FILE:LINE: FIELD: what`."""


class _NodeError(Exception):
    def __init__(self, node, message):
        super().__init__(message)
        self.line = node.start_mark.line + 1


@dataclass
class Scenario:
    path: Path
    name: str
    description: str
    resource_classes: list
    traits: list
    providers: dict  # name -> {"parent", "inventories" (full records), "traits", "aggregates"}
    consumers: dict  # name -> {"project", "user", "consumer_type", "allocations"}
    queries: dict  # name -> {"about", "microversion", "request", "expect", "line"}
    lines: dict = field(repr=False)  # field path -> line

    def uuid(self, kind, name):
        return str(uuid.uuid5(NAMESPACE, f"{self.name}/{kind}/{name}"))

    def provider_uuid(self, name):
        return self.uuid("provider", name)

    def aggregate_uuid(self, name):
        return self.uuid("aggregate", name)

    @property
    def scope_trait(self):
        """The trait on every root the scenario loads: how `apply --reset` finds an
        earlier load, and how queries stay inside the scenario (root_required)."""
        return "CUSTOM_PLACEDOCK_SCENARIO_" + self.name.upper().replace("-", "_")

    def roots(self):
        return [name for name, rp in self.providers.items() if rp["parent"] is None]

    def by_uuid(self):
        return {self.provider_uuid(name): name for name in self.providers}

    def ordered(self):
        """Provider names, every parent before its children."""
        done, order = set(), []

        def visit(name):
            if name not in done:
                parent = self.providers[name]["parent"]
                if parent is not None:
                    visit(parent)
                done.add(name)
                order.append(name)

        for name in self.providers:
            visit(name)
        return order


def _plain(node, path, lines):
    """The Python value of a composed YAML node; the line of every field into `lines`."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        value = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in value:
                raise _NodeError(key_node, f"{field_name((*path, key))}: given twice")
            value[key] = _plain(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return value
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*path, i), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node):
    """A scalar as PyYAML's safe loader reads it (1 -> int, 1.5 -> float, null...)."""
    if not isinstance(node, yaml.ScalarNode):
        raise _NodeError(node, "a mapping key must be a plain value")
    return _CONSTRUCTOR.construct_object(node)


_CONSTRUCTOR = yaml.SafeLoader("")


def microversion(text):
    """A microversion ("1.36") as a comparable tuple."""
    return tuple(map(int, text.split(".")))


def groups(request):
    """{suffix: the group's own part of a query's request}; '' is the unsuffixed group."""
    found = {}
    for key, value in request.items():
        for prefix in GROUP_KEYS:
            if key.startswith(prefix):
                found.setdefault(key[len(prefix) :], {})[prefix] = value
    return found


def field_name(path):
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Problems:
    def __init__(self, path, lines):
        self.path, self.lines, self.found = path, lines, []

    def add(self, where, message):
        line = self.lines.get(tuple(where))
        while line is None and where:
            where = where[:-1]
            line = self.lines.get(tuple(where))
        self.found.append(f"{self.path}:{line or 1}: {field_name(where)}: {message}")

    def raise_any(self):
        if self.found:
            raise ScenarioError("\n".join(self.found))


def known_names():
    """The standard resource classes and traits of this placement release's
    os-resource-classes and os-traits (checked offline, before placement is asked)."""
    return set(os_resource_classes.STANDARDS), set(os_traits.get_traits())


def read(path, known=None):
    """The Scenario in `path`, or ScenarioError. `known` is (resource classes,
    traits) that need no declaring; by default the standard ones."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ScenarioError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if node is None:
        raise ScenarioError(f"{path}:1: (top level): the file is empty")
    lines = {}
    try:
        data = _plain(node, (), lines)
    except _NodeError as exc:
        raise ScenarioError(f"{path}:{exc.line}: {exc}") from None
    problems = _Problems(path, lines)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    for error in sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path)):
        extra, message = _schema_message(error)
        problems.add([*error.absolute_path, *extra], message)
    problems.raise_any()
    scenario = _build(path, data, lines)
    _check_references(scenario, data, problems, known or known_names())
    problems.raise_any()
    return scenario


def _schema_message(error):
    """(extra path, message) for a schema error: an unknown field is pointed at itself."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        extra = [k for k in error.instance if k not in known and not any(re.search(p, str(k)) for p in patterns)]
        hint = (
            f" (known: {', '.join(known)})"
            if not patterns
            else " (a group key: resources, required, member_of, in_tree"
        )
        hint += " with a suffix of digits or _NAME)" if patterns else ""
        return extra[:1], f"unknown field {extra[0]!r}{hint}"
    if error.validator == "oneOf" and list(error.absolute_path)[-2:-1] == ["inventories"]:
        return [], f"{error.instance!r}: an inventory is a total (a positive integer) or a record with a total"
    return [], error.message


def _inventory(value):
    record = {"total": value} if isinstance(value, int) else dict(value)
    return {**INVENTORY_DEFAULTS, **record}


def _build(path, data, lines):
    providers = {}
    for rp in data["providers"]:
        providers.setdefault(
            rp["name"],
            {
                "parent": rp.get("parent"),
                "inventories": {rc: _inventory(v) for rc, v in rp.get("inventories", {}).items()},
                "traits": rp.get("traits", []),
                "aggregates": rp.get("aggregates", []),
            },
        )
    consumers = {
        c["name"]: {
            "project": c.get("project", "demo"),
            "user": c.get("user", "demo"),
            "consumer_type": c.get("consumer_type", "INSTANCE"),
            "allocations": c["allocations"],
        }
        for c in data.get("consumers", [])
    }
    queries = {
        q["name"]: {
            "about": q.get("about", ""),
            "microversion": q.get("microversion", "1.39"),
            "request": q["request"],
            "expect": q.get("expect"),
        }
        for q in data.get("queries", [])
    }
    return Scenario(
        path=path,
        name=data["name"],
        description=data.get("description", ""),
        resource_classes=data.get("resource_classes", []),
        traits=data.get("traits", []),
        providers=providers,
        consumers=consumers,
        queries=queries,
        lines=lines,
    )


def capacity(record):
    return int((record["total"] - record["reserved"]) * record["allocation_ratio"])


def _check_amount(problems, where, record, amount):
    if amount < record["min_unit"] or amount > record["max_unit"]:
        problems.add(where, f"{amount} is outside min_unit {record['min_unit']} .. max_unit {record['max_unit']}")
    elif amount % record["step_size"]:
        problems.add(where, f"{amount} is not a multiple of step_size {record['step_size']}")


def _unique(problems, items, prefix):
    seen = set()
    for i, item in enumerate(items):
        if item["name"] in seen:
            problems.add([prefix, i, "name"], f"{item['name']!r} appears twice")
        seen.add(item["name"])


def _check_references(scenario, data, problems, known):
    classes = known[0] | set(scenario.resource_classes)
    traits = known[1] | set(scenario.traits)
    for prefix in ("providers", "consumers", "queries"):
        _unique(problems, data.get(prefix, []), prefix)
    aggregates = {a for rp in scenario.providers.values() for a in rp["aggregates"]}

    def check_class(where, rc):
        if rc not in classes:
            problems.add(where, f"unknown resource class {rc} (custom ones go in resource_classes:)")

    def check_trait(where, trait):
        if trait not in traits:
            problems.add(where, f"unknown trait {trait} (custom ones go in traits:)")

    for i, rp in enumerate(data["providers"]):
        parent = rp.get("parent")
        if parent is not None and parent not in scenario.providers:
            problems.add(["providers", i, "parent"], f"unknown parent {parent!r}: no provider of that name")
        for rc in rp.get("inventories", {}):
            check_class(["providers", i, "inventories", rc], rc)
        for j, trait in enumerate(rp.get("traits", [])):
            check_trait(["providers", i, "traits", j], trait)
        record_problems = [
            (rc, r) for rc, r in scenario.providers[rp["name"]]["inventories"].items() if r["min_unit"] > r["max_unit"]
        ]
        for rc, _ in record_problems:
            problems.add(["providers", i, "inventories", rc], "min_unit is greater than max_unit")
    _check_cycles(scenario, data, problems)
    _check_allocations(scenario, data, problems, check_class)
    for i, query in enumerate(data.get("queries", [])):
        _check_query(scenario, query, ["queries", i], problems, aggregates, check_class, check_trait)


def _check_cycles(scenario, data, problems):
    for i, rp in enumerate(data["providers"]):
        seen, name = set(), rp["name"]
        while name is not None and name in scenario.providers and name not in seen:
            seen.add(name)
            name = scenario.providers[name]["parent"]
        if name is not None and name in seen:
            problems.add(["providers", i, "parent"], f"{rp['name']!r} is its own ancestor")


def _check_allocations(scenario, data, problems, check_class):
    used = {}
    for i, consumer in enumerate(data.get("consumers", [])):
        for rp_name, resources in consumer["allocations"].items():
            where = ["consumers", i, "allocations", rp_name]
            rp = scenario.providers.get(rp_name)
            if rp is None:
                problems.add(where, f"unknown provider {rp_name!r}")
                continue
            for rc, amount in resources.items():
                record = rp["inventories"].get(rc)
                if record is None:
                    check_class([*where, rc], rc)
                    problems.add([*where, rc], f"{rp_name} has no {rc} inventory")
                    continue
                _check_amount(problems, [*where, rc], record, amount)
                used[(rp_name, rc)] = used.get((rp_name, rc), 0) + amount
                if used[(rp_name, rc)] > capacity(record):
                    problems.add(
                        [*where, rc],
                        f"{rc} on {rp_name}: {used[(rp_name, rc)]} allocated in all, capacity {capacity(record)}",
                    )


def _check_query(scenario, query, where, problems, aggregates, check_class, check_trait):
    request = query["request"]
    suffixes = set(groups(request))
    for key, value in request.items():
        at = [*where, "request", key]
        if key.startswith("resources"):
            for rc in value:
                check_class([*at, rc], rc)
        elif key.startswith("required") or key == "root_required":
            for j, item in enumerate(value):
                for trait in item.removeprefix("in:").removeprefix("!").split(","):
                    check_trait([*at, j], trait.removeprefix("!"))
        elif key.startswith("member_of"):
            for j, item in enumerate(value):
                for name in item.removeprefix("!").removeprefix("in:").split(","):
                    if name not in aggregates:
                        problems.add([*at, j], f"unknown aggregate {name!r}: no provider of the scenario is in it")
        elif key.startswith("in_tree"):
            if value not in scenario.providers:
                problems.add(at, f"unknown provider {value!r}")
    for j, group in enumerate(request.get("same_subtree", [])):
        for suffix in group:
            if suffix not in suffixes:
                problems.add([*where, "request", "same_subtree", j], f"no request group with suffix {suffix!r}")
    for j, candidate in enumerate(query.get("expect") or []):
        for rp_name in candidate:
            if rp_name not in scenario.providers:
                problems.add([*where, "expect", j, rp_name], f"unknown provider {rp_name!r}")
