"""The data set an upgrade must keep: compute nodes in the perfload shape, grown
into trees, with consumers allocating across each tree. Loaded, and read back,
through the front door only.

Per compute node (`nodes` of them):

    cnN                DISK_GB; one to three of perfload's traits and aggregates
    +-- cnN-numa0      VCPU (ratio 4.0), MEMORY_MB (512 reserved); HW_NUMA_ROOT
    +-- cnN-numa1      the same
    +-- cnN-pf0        SRIOV_NET_VF, CUSTOM_PLACEDOCK_ACCEL (a custom class);
                       HW_NIC_SRIOV, CUSTOM_PLACEDOCK_PHYSNET0 (a custom trait)

and two consumers per node, each allocating from three or four of its providers.
"""

import uuid
from concurrent.futures import ThreadPoolExecutor

from placedock.api.client import Client

# The perfload shape's fixed aggregates and traits (placeload 0.4.0's, as the benchmark uses).
from placedock.traffic.perfload import AGGREGATES, TRAITS

# The newest microversion the data set needs (consumer types); both releases
# of a rehearsal must serve it.
MICROVERSION = "1.38"
HEADERS = {"x-auth-token": "admin", "openstack-api-version": f"placement {MICROVERSION}", "accept": "application/json"}
CUSTOM_CLASS = "CUSTOM_PLACEDOCK_ACCEL"
CUSTOM_TRAIT = "CUSTOM_PLACEDOCK_PHYSNET0"
PROJECT = "6f7b1c2e-0d64-4b53-9d43-2d8f2b1e7a10"
USER = "0b9d6a4f-43c1-4d9e-8a57-1f3e6c2d5b88"


def inventory(total, **extra):
    return {
        "total": total,
        "reserved": 0,
        "min_unit": 1,
        "max_unit": total,
        "step_size": 1,
        "allocation_ratio": 1.0,
        **extra,
    }


ROOT_INVENTORY = {"DISK_GB": inventory(2048)}
NUMA_INVENTORY = {
    "VCPU": inventory(16, allocation_ratio=4.0),
    "MEMORY_MB": inventory(65536, reserved=512),
}
PF_INVENTORY = {"SRIOV_NET_VF": inventory(8), CUSTOM_CLASS: inventory(4)}


def client(url):
    """A client for the data set's microversion, as the noauth admin."""
    return Client(url, HEADERS)


def new_consumer(allocations):
    """The body of PUT /allocations/{consumer} for a consumer that does not exist yet."""
    return {
        "allocations": allocations,
        "project_id": PROJECT,
        "user_id": USER,
        "consumer_generation": None,
        "consumer_type": "INSTANCE",
    }


def create_provider(client, name, parent=None):
    uu = str(uuid.uuid4())
    body = {"uuid": uu, "name": name, **({"parent_provider_uuid": parent} if parent else {})}
    client.call("POST", "/resource_providers", body)
    return uu


def put_collection(client, uu, what, generation, **body):
    """PUT one of a provider's collections; its new generation."""
    resp = client.call("PUT", f"/resource_providers/{uu}/{what}", {"resource_provider_generation": generation, **body})
    return resp["resource_provider_generation"]


def _load_node(client, index):
    """One compute node tree and its two consumers; (provider uuids, consumer uuids)."""
    root = create_provider(client, f"cn{index}")
    generation = put_collection(client, root, "inventories", 0, inventories=ROOT_INVENTORY)
    generation = put_collection(client, root, "traits", generation, traits=TRAITS[: index % 3 + 1])
    put_collection(client, root, "aggregates", generation, aggregates=AGGREGATES[: index % 3 + 1])
    numa = []
    for cell in (0, 1):
        uu = create_provider(client, f"cn{index}-numa{cell}", parent=root)
        generation = put_collection(client, uu, "inventories", 0, inventories=NUMA_INVENTORY)
        put_collection(client, uu, "traits", generation, traits=["HW_NUMA_ROOT"])
        numa.append(uu)
    pf = create_provider(client, f"cn{index}-pf0", parent=root)
    generation = put_collection(client, pf, "inventories", 0, inventories=PF_INVENTORY)
    put_collection(client, pf, "traits", generation, traits=["HW_NIC_SRIOV", CUSTOM_TRAIT])
    consumers = []
    for cell in (0, 1):
        consumer = str(uuid.uuid4())
        allocations = {
            root: {"resources": {"DISK_GB": 20}},
            numa[cell]: {"resources": {"VCPU": 2, "MEMORY_MB": 2048}},
            pf: {"resources": {"SRIOV_NET_VF": 1, **({CUSTOM_CLASS: 1} if cell == 0 else {})}},
        }
        client.call("PUT", f"/allocations/{consumer}", new_consumer(allocations), expect=(204,))
        consumers.append(consumer)
    return [root, *numa, pf], consumers


def load(url, nodes, concurrency=4):
    """Create the data set; {"providers": [...], "consumers": [...]}."""
    client = Client(url, HEADERS)
    client.call("PUT", f"/resource_classes/{CUSTOM_CLASS}", expect=(201, 204))
    client.call("PUT", f"/traits/{CUSTOM_TRAIT}", expect=(201, 204))
    # The first association of an aggregate inserts it, and two replicas
    # inserting the same new aggregate at once can deadlock in MariaDB (placement
    # answers 500; seen on 15.0.0). So the node that names every aggregate the
    # data set uses is loaded first, alone; the rest only ever find them.
    first = min(nodes, len(AGGREGATES)) - 1
    trees = {first: _load_node(client, first)} if nodes else {}
    rest = [i for i in range(nodes) if i != first]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        trees.update(zip(rest, pool.map(lambda i: _load_node(client, i), rest), strict=True))
    trees = [trees[i] for i in range(nodes)]
    return {
        "providers": [uu for providers, _ in trees for uu in providers],
        "consumers": [uu for _, consumers in trees for uu in consumers],
    }


def _provider(client, uu):
    rp = client.call("GET", f"/resource_providers/{uu}")
    return {
        "name": rp["name"],
        "generation": rp["generation"],
        "parent": rp["parent_provider_uuid"],
        "root": rp["root_provider_uuid"],
        "inventories": client.call("GET", f"/resource_providers/{uu}/inventories")["inventories"],
        "traits": sorted(client.call("GET", f"/resource_providers/{uu}/traits")["traits"]),
        "aggregates": sorted(client.call("GET", f"/resource_providers/{uu}/aggregates")["aggregates"]),
        "allocations": client.call("GET", f"/resource_providers/{uu}/allocations")["allocations"],
        "usages": client.call("GET", f"/resource_providers/{uu}/usages")["usages"],
    }


def snapshot(url, data, concurrency=8):
    """Everything placement holds about the data set, as read through the front door."""
    client = Client(url, HEADERS)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        providers = dict(
            zip(data["providers"], pool.map(lambda uu: _provider(client, uu), data["providers"]), strict=True)
        )
        consumers = dict(
            zip(
                data["consumers"],
                pool.map(lambda c: client.call("GET", f"/allocations/{c}"), data["consumers"]),
                strict=True,
            )
        )
    return {
        "providers": providers,
        "consumers": consumers,
        "custom classes": sorted(
            rc["name"]
            for rc in client.call("GET", "/resource_classes")["resource_classes"]
            if rc["name"].startswith("CUSTOM_")
        ),
        "custom traits": sorted(client.call("GET", "/traits?name=startswith:CUSTOM_")["traits"]),
    }


def differences(before, after, limit=5):
    """Where two snapshots differ: at most `limit` 'what: before -> after' lines."""
    found = []
    for section in before:
        if isinstance(before[section], dict):
            for key in sorted(set(before[section]) | set(after.get(section, {}))):
                old, new = before[section].get(key), after.get(section, {}).get(key)
                if old != new:
                    fields = [f for f in (old or {}) if (old or {}).get(f) != (new or {}).get(f)] if old and new else []
                    found.append(f"{section} {key}: {', '.join(fields) or 'missing'} differ")
        elif before[section] != after.get(section):
            found.append(f"{section}: {before[section]} -> {after.get(section)}")
    return found[:limit], len(found)
