"""mariadb/galera-choose, the decision a Galera node makes as it starts
(bootstrap, join or wait), put every case with no cluster: each test gives it
what the nodes said of themselves, as galera-status says it, and reads the
one line it prints."""

import itertools
import random
import subprocess
from pathlib import Path

import pytest

CHOOSE = Path(__file__).resolve().parents[2] / "mariadb" / "galera-choose"
NODES = ("galera-1", "galera-2", "galera-3")
ADDRESS = ",".join(NODES)


def saved(seqno=-1, safe=0, cluster="placedock", address=ADDRESS):
    """A node not yet running: its saved position (galera-node's own state file)."""
    return {"phase": "deciding", "cluster": cluster, "address": address, "seqno": seqno, "safe_to_bootstrap": safe}


def running(status="Primary", state=4):
    """A node whose mariadbd runs, as galera-status reports it (4: Synced)."""
    return {
        "phase": "running",
        "cluster": "placedock",
        "address": ADDRESS,
        "wsrep_cluster_status": status,
        "wsrep_local_state": state,
    }


def choose(node, states, force=""):
    """What `node` does, given each node's state (None: it did not answer);
    its own state is states[node]. Returns (exit status, the line printed)."""
    blocks = [node, *(name for name in NODES if name != node)]
    text = ""
    for name in blocks:
        text += f"[{name}]\n"
        if states.get(name) is not None:
            text += "".join(f"{key}={value}\n" for key, value in states[name].items())
    done = subprocess.run(
        ["bash", str(CHOOSE), node, ADDRESS, force], input=text, capture_output=True, text=True, check=False
    )
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout.strip()


def action(node, states, force=""):
    status, line = choose(node, states, force)
    assert status == 0, line
    return line.split()[0], line


def test_a_new_cluster_is_bootstrapped_by_the_first_node_alone():
    states = dict.fromkeys(NODES, saved())
    assert action("galera-1", states)[0] == "bootstrap"
    waiting = "wait waiting for galera-1 to bootstrap (the highest position of all 3 nodes, seqno -1)"
    for node in NODES[1:]:
        assert action(node, states) == ("wait", waiting)


def test_the_node_that_left_last_cleanly_bootstraps_even_with_a_lower_seqno():
    states = {"galera-1": saved(20), "galera-2": saved(18), "galera-3": saved(19, safe=1)}
    assert [action(node, states)[0] for node in NODES] == ["wait", "wait", "bootstrap"]
    assert "safe_to_bootstrap" in action("galera-3", states)[1]


def test_after_a_crash_the_highest_position_bootstraps_the_first_listed_on_a_tie():
    assert [action(n, {"galera-1": saved(7), "galera-2": saved(9), "galera-3": saved(8)})[0] for n in NODES] == [
        "wait",
        "bootstrap",
        "wait",
    ]
    assert [action(n, {"galera-1": saved(7), "galera-2": saved(9), "galera-3": saved(9)})[0] for n in NODES] == [
        "wait",
        "bootstrap",
        "wait",
    ]


def test_no_node_bootstraps_before_every_position_is_known_and_it_says_whom_it_waits_for():
    # galera-3 has the highest seqno, but galera-3 has not answered: nobody may decide.
    for missing in (None, {"phase": "starting"}, {**saved(), "seqno": "garbage"}):
        states = {"galera-1": saved(30), "galera-2": saved(20), "galera-3": missing}
        for node in NODES[:2]:
            verb, line = action(node, states)
            assert verb == "wait"
            assert "waiting to hear from galera-3" in line and "GALERA_FORCE_BOOTSTRAP" in line


def test_the_forced_node_bootstraps_alone_and_the_others_wait_for_it():
    states = {"galera-1": saved(30), "galera-2": saved(20, safe=1), "galera-3": None}
    assert action("galera-1", states, force="galera-1") == ("bootstrap", "bootstrap GALERA_FORCE_BOOTSTRAP=galera-1")
    # The node Galera marked safe does not bootstrap a second cluster beside it.
    assert action("galera-2", states, force="galera-1")[0] == "wait"


def test_a_running_cluster_is_joined_whatever_the_positions_and_the_forced_name():
    states = {"galera-1": saved(99, safe=1), "galera-2": running(), "galera-3": saved(1)}
    assert action("galera-1", states, force="galera-1")[0] == "join"
    assert action("galera-3", states)[0] == "join"


def test_a_cluster_still_forming_is_waited_for_never_bootstrapped_beside():
    for joining in (running("Primary", 1), running("Primary", 2), running("Disconnected", 0), running("", "")):
        states = {"galera-1": saved(99, safe=1), "galera-2": joining, "galera-3": saved(1)}
        assert action("galera-1", states, force="galera-1") == ("wait", "wait waiting for galera-2 to be Synced")


def test_the_state_transfer_comes_only_from_peers_that_were_synced():
    """The root cause of "IST didn't contain all write sets": two nodes joined
    at once and the second took its transfer from the first, which had only
    just joined. galera-3 here is joining (state 1); galera-2 must not ask it."""
    states = {"galera-1": running(), "galera-2": saved(5), "galera-3": running("Primary", 1)}
    assert action("galera-2", states) == ("join", "join galera-1, galera-1 Synced")


def test_donors_are_the_synced_peers_the_last_listed_first():
    # The backups before the writer, so a full transfer never read-locks the writer.
    states = {"galera-1": saved(5), "galera-2": running(), "galera-3": running()}
    assert action("galera-1", states)[1].split()[:2] == ["join", "galera-3,galera-2,"]


def test_a_peer_cut_off_from_the_majority_is_joined_to_restore_the_primary_component():
    states = {"galera-1": running("non-Primary", 0), "galera-2": saved(5), "galera-3": None}
    verb, line = action("galera-2", states)
    assert verb == "join" and "galera-1 runs without a primary component" in line


@pytest.mark.parametrize(
    ("peer", "variable"),
    [
        (saved(cluster="another"), "GALERA_CLUSTER_NAME"),
        (saved(address="galera-1,galera-2"), "GALERA_CLUSTER_ADDRESS"),
        ({**running(), "cluster": "another"}, "GALERA_CLUSTER_NAME"),
    ],
)
def test_a_peer_of_another_cluster_stops_the_node_with_a_line_naming_the_variable(peer, variable):
    status, line = choose("galera-1", {"galera-1": saved(), "galera-2": peer, "galera-3": saved()})
    assert status == 1
    assert line.startswith(f"{variable}=") and "galera-2" in line and "\n" not in line


def test_every_node_ranks_the_same_states_alike_so_exactly_one_bootstraps():
    """No split brain: for any saved positions of the three (at most one marked
    safe, as Galera marks it), exactly one node bootstraps, and it is the safe
    one or one with the highest seqno."""
    rng = random.Random(25)
    cases = [tuple(rng.randint(-1, 4) for _ in NODES) for _ in range(40)]
    for seqnos, safe in itertools.product(cases[:20], (None, *NODES)):
        states = {node: saved(seqno, safe=int(node == safe)) for node, seqno in zip(NODES, seqnos, strict=True)}
        chosen = [node for node in NODES if action(node, states)[0] == "bootstrap"]
        assert len(chosen) == 1, (states, chosen)
        if safe:
            assert chosen == [safe]
        else:
            assert seqnos[NODES.index(chosen[0])] == max(seqnos)
            assert NODES.index(chosen[0]) == seqnos.index(max(seqnos))
