"""Run a scenario's named queries: GET /allocation_candidates with the
request written in the file (names turned into UUIDs), each candidate as a
table of which provider gives which resource, compared with the file's
expectations; an empty answer is explained group by group.

Queries stay inside the scenario. From 1.35 the scenario's scope trait is
added to root_required, so placement itself looks at the scenario's trees
only (and a limit counts only those); before 1.35 candidates that use a
provider outside the scenario are dropped here, and the report says how many.
"""

import collections
from dataclasses import dataclass, field

from placedock.api.client import ApiError
from placedock.commands.modelling.apply import live_state
from placedock.commands.modelling.spec import capacity, groups
from placedock.commands.modelling.spec import microversion as mv


def params(scenario, request, microversion, scoped=True):
    """The query string of a request, as (key, value) pairs, in the file's order."""
    out = []
    for key, value in request.items():
        if key.startswith("resources"):
            out.append((key, ",".join(f"{rc}:{n}" for rc, n in value.items())))
        elif key.startswith("required"):
            plain = [t for t in value if not t.startswith("in:")]
            if plain:
                out.append((key, ",".join(plain)))
            out += [(key, t) for t in value if t.startswith("in:")]
        elif key.startswith("member_of"):
            for item in value:
                negate = "!" if item.startswith("!") else ""
                body = item.removeprefix("!")
                prefix = "in:" if body.startswith("in:") else ""
                names = body.removeprefix("in:").split(",")
                out.append((key, negate + prefix + ",".join(scenario.aggregate_uuid(n) for n in names)))
        elif key.startswith("in_tree"):
            out.append((key, scenario.provider_uuid(value)))
        elif key == "root_required":
            out.append((key, ",".join(value)))
        elif key == "same_subtree":
            out += [(key, ",".join(group)) for group in value]
        else:
            out.append((key, str(value)))
    if scoped and mv(microversion) >= (1, 35):
        roots = [(k, v) for k, v in out if k == "root_required"]
        out = [(k, v) for k, v in out if k != "root_required"]
        out.append(("root_required", ",".join([*(v for _, v in roots), scenario.scope_trait])))
    return out


def candidates_of(body, microversion):
    """[(allocations {uuid: {rc: n}}, mappings {suffix: [uuid]})] from placement's answer."""
    out = []
    for request in body["allocation_requests"]:
        if mv(microversion) >= (1, 12):
            allocations = {uu: a["resources"] for uu, a in request["allocations"].items()}
        else:
            allocations = {a["resource_provider"]["uuid"]: a["resources"] for a in request["allocations"]}
        out.append((allocations, request.get("mappings", {})))
    return out


def canonical(candidate):
    return frozenset((rp, rc, n) for rp, resources in candidate.items() for rc, n in resources.items())


@dataclass
class Result:
    name: str
    about: str
    microversion: str
    query: list
    grouped: bool  # more than one request group: the table names each provider's groups
    candidates: list = field(default_factory=list)  # [{name: {rc: n}}]
    mappings: list = field(default_factory=list)  # [{suffix: [name]}]
    outside: int = 0
    error: str = ""
    verdict: str = ""  # "" when the file states no expectation
    matches: bool = True
    why_empty: list = field(default_factory=list)

    def lines(self):
        query = "&".join(f"{k}={v}" for k, v in self.query)
        out = [
            f"query {self.name}: {self.about}".rstrip(": "),
            f"  GET /allocation_candidates?{query}  ({self.microversion})",
        ]
        if self.error:
            return [*out, f"  refused: {self.error}"]
        out.append(
            f"  {len(self.candidates)} candidate(s)"
            + (f"; {self.outside} outside the scenario dropped" if self.outside else "")
        )
        for i, (candidate, mapping) in enumerate(zip(self.candidates, self.mappings, strict=True), 1):
            by_provider = {
                name: [s or "(unsuffixed)" for s, names in mapping.items() if name in names] for name in candidate
            }
            width = max(len(name) for name in candidate)
            for j, (name, resources) in enumerate(sorted(candidate.items())):
                given = ", ".join(f"{rc} {n}" for rc, n in sorted(resources.items()))
                group = f"  [{' '.join(by_provider[name])}]" if self.grouped and by_provider[name] else ""
                out.append(f"  {f'#{i}' if j == 0 else '':>4} {name:<{width}}  {given}{group}")
        out += [f"  {line}" for line in self.why_empty]
        if self.verdict:
            out.append(f"  {self.verdict}")
        return out


class Runner:
    def __init__(self, client, scenario):
        self.client = client
        self.scenario = scenario
        self.names = scenario.by_uuid()

    def ask(self, query, microversion):
        """(candidates {name: {rc: n}}, mappings, dropped) for query string pairs, or ApiError."""
        headers = {"openstack-api-version": f"placement {microversion}"}
        body = self.client.call("GET", "/allocation_candidates", params=query, headers=headers)
        found, mappings, outside = [], [], 0
        for allocations, mapping in candidates_of(body, microversion):
            if not set(allocations) <= set(self.names):
                outside += 1
                continue
            found.append({self.names[uu]: res for uu, res in allocations.items()})
            mappings.append({s: [self.names[uu] for uu in uus] for s, uus in mapping.items()})
        return found, mappings, outside

    def run(self, name):
        q = self.scenario.queries[name]
        query = params(self.scenario, q["request"], q["microversion"])
        result = Result(name, q["about"], q["microversion"], query, grouped=len(groups(q["request"])) > 1)
        try:
            result.candidates, result.mappings, result.outside = self.ask(query, q["microversion"])
        except ApiError as exc:
            result.error, result.matches = str(exc).split(": ", 1)[-1], False
            return result
        if not result.candidates:
            result.why_empty = self.explain(q)
        if q["expect"] is not None:
            self.judge(result, q)
        return result

    def judge(self, result, q):
        """Candidates compared as a multiset: placement answers once per mapping of
        groups to providers, so the same allocations may rightly come twice."""
        want = collections.Counter(canonical(c) for c in q["expect"])
        got = collections.Counter(canonical(c) for c in result.candidates)
        limit = q["request"].get("limit")
        if limit is None:
            result.matches = got == want
        else:
            result.matches = got.total() == min(limit, want.total()) and not got - want
        if result.matches:
            result.verdict = "as expected"
            return
        named = {canonical(c): c for c in [*q["expect"], *result.candidates]}
        lines = [f"returned, not expected: {named[k]}" + (f" (x{n})" if n > 1 else "") for k, n in (got - want).items()]
        if limit is None:
            lines += [
                f"expected, not returned: {named[k]}" + (f" (x{n})" if n > 1 else "") for k, n in (want - got).items()
            ]
        else:
            lines.append(f"{got.total()} returned with limit {limit}; {min(limit, want.total())} expected")
        result.verdict = "NOT as expected:" + "".join(f"\n    {line}" for line in lines)

    def explain(self, q):
        """Lines that say which request group finds no provider, and why."""
        request, microversion = q["request"], q["microversion"]
        found_alone, lines = {}, []
        for suffix, group in groups(request).items():
            alone = {f"{k}{suffix}": v for k, v in group.items()}
            try:
                candidates, _, _ = self.ask(params(self.scenario, alone, microversion), microversion)
            except ApiError as exc:
                lines.append(f"group {suffix or '(unsuffixed)'} alone was refused: {exc}")
                continue
            found_alone[suffix] = bool(candidates)
            if not candidates:
                lines.append(f"why none: group {suffix or '(unsuffixed)'} alone finds no provider")
                lines += [f"  {line}" for line in self.why_group(suffix, group)]
        if found_alone and all(found_alone.values()):
            lines.append("why none: every request group alone finds providers, but not all of them at once:")
            if request.get("group_policy") == "isolate":
                lines.append("  group_policy=isolate: each numbered group needs a provider of its own")
            if "same_subtree" in request:
                lines.append("  same_subtree: the groups named must sit under one of their providers")
            if "root_required" in request:
                lines.append(f"  root_required: the tree's root must have {','.join(request['root_required'])}")
            lines.append(
                "  one tree (and its sharing providers) serves every group; groups on one provider must fit it together"
            )
        return lines

    def why_group(self, suffix, group):
        """What each provider of the scenario could give a group that none serves."""
        state, lines = live_state(self.client, self.scenario), []
        able = set(state)  # providers that could give every part of the group
        for rc, amount in group.get("resources", {}).items():
            offers, can = [], set()
            for name, rp in sorted(state.items()):
                record = rp["inventories"].get(rc)
                if record is None:
                    continue
                free = capacity(record) - rp["usages"].get(rc, 0)
                units = record["min_unit"] <= amount <= record["max_unit"] and amount % record["step_size"] == 0
                if units and free >= amount:
                    can.add(name)
                limits = (
                    "" if units else f", units {record['min_unit']}..{record['max_unit']} step {record['step_size']}"
                )
                offers.append(f"{name} {free} free{limits}")
            able &= can
            if can:
                lines.append(f"{rc}:{amount}: from {', '.join(sorted(can))}")
            else:
                lines.append(f"{rc}:{amount}: NO provider can give it ({'; '.join(offers) or 'none has this class'})")
        for item in group.get("required", []):
            any_of = item.startswith("in:")
            with_any = set()
            for trait in item.removeprefix("in:").split(","):
                has = {name for name, rp in state.items() if trait.removeprefix("!") in rp["traits"]}
                if trait.startswith("!"):
                    has = set(state) - has
                with_any |= has
                if not any_of:
                    able &= has
                    what = f"without {trait[1:]}" if trait.startswith("!") else f"with {trait}"
                    lines.append(f"{what}: {', '.join(sorted(has)) or 'none'}")
            if any_of:
                able &= with_any
                lines.append(f"with any of {item[3:]}: {', '.join(sorted(with_any)) or 'none'}")
        if suffix and not able and len(lines) > 1:
            lines.append("no one provider has all of this group's resources and traits")
        return lines
