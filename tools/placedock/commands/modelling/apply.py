"""Load a scenario into placement through its API, idempotently: each part is
read first and written only if it differs, so loading the same file again
changes no generation. `reset` removes an earlier load of the same scenario
(whatever its file said then): the trees whose root carries its scope trait.

Before the first write, every name placement must know is checked against it,
and every provider name against the providers placement already has, so a load
that would fail half way is refused whole.
"""

from placedock.api.client import ApiError
from placedock.commands.modelling.spec import ScenarioError, field_name, microversion

# Consumer types (1.38) and any-of traits (1.39): the newest the loader needs.
MICROVERSION = "1.39"
HEADERS = {"openstack-api-version": f"placement {MICROVERSION}"}


def check_server(client):
    version = client.call("GET", "/")["versions"][0]
    if microversion(version["max_version"]) < microversion(MICROVERSION):
        raise ScenarioError(
            f"placement at {client.url} serves up to {version['max_version']}; scenarios need {MICROVERSION}"
        )


def standard_names(client):
    """(resource classes, traits) this placement knows without a scenario declaring
    them: its standard ones, which its own os-resource-classes and os-traits decide."""
    classes = client.call("GET", "/resource_classes", headers=HEADERS)["resource_classes"]
    traits = client.call("GET", "/traits", headers=HEADERS)["traits"]
    return (
        {rc["name"] for rc in classes if not rc["name"].startswith("CUSTOM_")},
        {t for t in traits if not t.startswith("CUSTOM_")},
    )


def check_against(client, scenario):
    """ScenarioError for what placement would refuse part way through the load."""
    problems = []
    for name in scenario.providers:
        uu = scenario.provider_uuid(name)
        found = client.call("GET", "/resource_providers", params={"name": name}, headers=HEADERS)
        for rp in found["resource_providers"]:
            if rp["uuid"] != uu:
                line = scenario.lines.get(("providers", list(scenario.providers).index(name), "name"), 1)
                problems.append(
                    f"{scenario.path}:{line}: {field_name(('providers', name))}: placement already has a provider "
                    f"named {name!r} ({rp['uuid']}) that this scenario did not load: rename it here"
                )
    if problems:
        raise ScenarioError("\n".join(problems))


class Loader:
    def __init__(self, client, scenario):
        self.client = client
        self.scenario = scenario
        self.writes = 0

    def call(self, method, path, body=None, expect=(200,)):
        if method != "GET":
            self.writes += 1
        return self.client.call(method, path, body, expect=expect, headers=HEADERS)

    def get(self, path):
        """The body ({} for a 204: a trait or class that exists), or None for a 404."""
        resp = self.client.request("GET", path, headers=HEADERS)
        if resp.status_code == 404:
            return None
        if resp.status_code not in (200, 204):
            raise ApiError("GET", path, resp)
        return resp.json() if resp.content else {}

    def load(self):
        s = self.scenario
        for rc in s.resource_classes:
            if self.get(f"/resource_classes/{rc}") is None:
                self.call("PUT", f"/resource_classes/{rc}", expect=(201, 204))
        for trait in [*s.traits, s.scope_trait]:
            if self.get(f"/traits/{trait}") is None:
                self.call("PUT", f"/traits/{trait}", expect=(201, 204))
        for name in s.ordered():
            self.provider(name)
        for name in s.ordered():
            self.collections(name)
        for name in s.consumers:
            self.consumer(name)
        return self.writes

    def provider(self, name):
        s = self.scenario
        uu, parent = s.provider_uuid(name), s.providers[name]["parent"]
        want = {"name": name, "parent_provider_uuid": s.provider_uuid(parent) if parent else None}
        have = self.get(f"/resource_providers/{uu}")
        if have is None:
            self.call("POST", "/resource_providers", {"uuid": uu, **want})
        elif {k: have[k] for k in want} != want:
            # 1.37 re-parents and renames in place.
            self.call("PUT", f"/resource_providers/{uu}", want)

    def collections(self, name):
        s = self.scenario
        rp = s.providers[name]
        uu = s.provider_uuid(name)
        traits = set(rp["traits"]) | ({s.scope_trait} if rp["parent"] is None else set())
        wanted = {
            "inventories": ("inventories", rp["inventories"]),
            "traits": ("traits", sorted(traits)),
            "aggregates": ("aggregates", sorted(s.aggregate_uuid(a) for a in rp["aggregates"])),
        }
        for what, (key, want) in wanted.items():
            have = self.get(f"/resource_providers/{uu}/{what}")
            current = have[key] if what == "inventories" else sorted(have[key])
            if current != want:
                body = {"resource_provider_generation": have["resource_provider_generation"], key: want}
                self.call("PUT", f"/resource_providers/{uu}/{what}", body)

    def consumer(self, name):
        s = self.scenario
        c = s.consumers[name]
        uu = s.uuid("consumer", name)
        want = {s.provider_uuid(rp): {"resources": res} for rp, res in c["allocations"].items()}
        project, user = s.uuid("project", c["project"]), s.uuid("user", c["user"])
        have = self.get(f"/allocations/{uu}")
        same = (
            have.get("allocations")
            and {rp: {"resources": a["resources"]} for rp, a in have["allocations"].items()} == want
            and (have["project_id"], have["user_id"], have["consumer_type"]) == (project, user, c["consumer_type"])
        )
        if not same:
            body = {
                "allocations": want,
                "project_id": project,
                "user_id": user,
                "consumer_type": c["consumer_type"],
                "consumer_generation": have.get("consumer_generation"),
            }
            self.call("PUT", f"/allocations/{uu}", body, expect=(204,))

    def loaded_trees(self):
        """{uuid: provider} of every tree an earlier load of this scenario made."""
        if self.get(f"/traits/{self.scenario.scope_trait}") is None:
            return {}  # never loaded here: placement would refuse a filter on an unknown trait
        roots = self.get(f"/resource_providers?required={self.scenario.scope_trait}")["resource_providers"]
        found = {}
        for root in roots:
            tree = self.get(f"/resource_providers?in_tree={root['uuid']}")["resource_providers"]
            found.update({rp["uuid"]: rp for rp in tree})
        return found

    def reset(self):
        """Remove an earlier load: its consumers' allocations, then its providers, leaves first."""
        found = self.loaded_trees()
        consumers = set()
        for uu in found:
            consumers |= set(self.get(f"/resource_providers/{uu}/allocations")["allocations"])
        for consumer in sorted(consumers):
            self.call("DELETE", f"/allocations/{consumer}", expect=(204, 404))

        def depth(rp):
            level = 0
            while rp["parent_provider_uuid"] in found:
                rp, level = found[rp["parent_provider_uuid"]], level + 1
            return level

        for rp in sorted(found.values(), key=depth, reverse=True):
            self.call("DELETE", f"/resource_providers/{rp['uuid']}", expect=(204, 404))
        return len(found), len(consumers)

    def strays(self):
        """Names of providers an earlier load made that the file no longer has."""
        mine = self.scenario.by_uuid()
        return sorted(rp["name"] for uu, rp in self.loaded_trees().items() if uu not in mine)


def live_state(client, scenario):
    """{name: {"parent", "inventories", "usages", "traits", "aggregates"}} as placement has them
    (for a scenario that is loaded: placedock modelling checks that first)."""

    def get(path, key):
        return client.call("GET", path, headers=HEADERS)[key]

    state = {}
    aggregates = {scenario.aggregate_uuid(a): a for rp in scenario.providers.values() for a in rp["aggregates"]}
    names = scenario.by_uuid()
    for uu, name in names.items():
        rp = f"/resource_providers/{uu}"
        parent = get(rp, "parent_provider_uuid")
        state[name] = {
            "parent": names.get(parent, parent),
            "inventories": get(f"{rp}/inventories", "inventories"),
            "usages": get(f"{rp}/usages", "usages"),
            "traits": sorted(t for t in get(f"{rp}/traits", "traits") if t != scenario.scope_trait),
            "aggregates": sorted(aggregates.get(a, a) for a in get(f"{rp}/aggregates", "aggregates")),
        }
    return state
