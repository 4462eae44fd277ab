"""placedock.traffic.ledger's accounting, against a scripted server (no stack): one
outcome per request, nothing rewritten, every write's trace expected
afterwards, a Retry-After waited out, failed reads dated."""

import time
import uuid

import pytest
from placedock.traffic import ledger

HEADERS = {"x-auth-token": "admin"}
RP = str(uuid.uuid4())


@pytest.mark.parametrize(
    "method, status, outcome",
    [
        ("GET", 200, ledger.READ),
        ("GET", 404, ledger.READ_FAILED),
        ("GET", 503, ledger.READ_FAILED),
        ("GET", None, ledger.READ_FAILED),
        ("PUT", 204, ledger.ACKNOWLEDGED),
        ("POST", 200, ledger.ACKNOWLEDGED),
        ("PUT", 409, ledger.REFUSED),
        ("PUT", 400, ledger.REFUSED),
        # Not rewritten as deleted: it is what placement said.
        ("DELETE", 404, ledger.REFUSED),
        ("PUT", 502, ledger.IN_DOUBT),
        ("PUT", 503, ledger.IN_DOUBT),
        ("DELETE", 504, ledger.IN_DOUBT),
        ("POST", 500, ledger.IN_DOUBT),
        ("PUT", None, ledger.IN_DOUBT),
    ],
)
def test_each_answer_has_one_outcome(method, status, outcome):
    assert ledger.classify(method, status) == outcome


WRITTEN = {RP: {"VCPU": 3}}


def writer(server, book, seconds=30):
    """A Writer on one provider whose every allocation is VCPU: 3 (WRITTEN)."""
    one = ledger.Writer(server.url, HEADERS, book, [RP], project=str(uuid.uuid4()), seconds=seconds)
    one.rng.randint = lambda low, high: 3
    return one


@pytest.mark.parametrize(
    "answer, outcome, states",
    [
        (204, ledger.ACKNOWLEDGED, "written"),
        (409, ledger.REFUSED, "nothing"),
        (400, ledger.REFUSED, "nothing"),
        (502, ledger.IN_DOUBT, "either"),
        ("drop", ledger.IN_DOUBT, "either"),
    ],
)
def test_an_allocation_write_expects_what_its_answer_allows(serve, answer, outcome, states):
    book = ledger.Ledger()
    server = serve(answer)
    writer(server, book).allocate()
    ((key, expected),) = book.expected.items()
    assert key[0] == "allocations" and server.requests() == [("PUT", f"/allocations/{key[1]}")]
    assert expected == {"written": (WRITTEN,), "nothing": ({},), "either": ({}, WRITTEN)}[states]
    assert book.outcomes == {outcome: 1}
    if answer == "drop":
        # Dated, and the exception's message kept: how the connection ended.
        ((_, path, what),) = book.in_doubt
        assert path == f"PUT /allocations/{key[1]}" and what.startswith("ConnectionError: ")
        assert "closed connection without response" in what, what


@pytest.mark.parametrize("answer, states", [(204, "gone"), (404, "unchanged"), (503, "either"), ("drop", "either")])
def test_a_delete_expects_what_its_answer_allows_and_a_404_is_not_a_delete(serve, answer, states):
    book = ledger.Ledger()
    server = serve(204, answer)
    one = writer(server, book)
    one.allocate()
    ((key, _),) = book.expected.items()
    one.deallocate()
    assert book.expected[key] == {"gone": ({},), "unchanged": (WRITTEN,), "either": (WRITTEN, {})}[states]
    if answer == 404:
        assert book.refused == {"DELETE 404": 1}


def test_a_retry_after_is_waited_out_before_the_next_request(serve):
    book = ledger.Ledger()
    server = serve((503, {"Retry-After": "1"}), 204)
    one = writer(server, book)
    one.allocate()
    one.allocate()
    (first, second) = server.seen
    assert second[2] - first[2] >= 1.0, "sent again before Retry-After: 1 had passed"
    assert book.waited >= 1.0
    assert len(book.in_doubt) == 1 and book.outcomes[ledger.ACKNOWLEDGED] == 1


def test_failed_reads_are_dated(serve):
    book = ledger.Ledger()
    server = serve(200, 503, "drop", 200)
    reader = ledger.Reader(server.url, HEADERS, book, paths=["/a", "/b", "/c", "/d"], seconds=30)
    time.sleep(0.2)
    reader.step()
    assert book.reads == book.sent == 4 and [path for _, path, _ in book.read_failures] == ["GET /b", "GET /c"]
    first, last = book.read_window()
    assert 0.2 <= first <= last < 5


def test_verify_names_every_expectation_placement_does_not_hold(serve):
    book = ledger.Ledger()
    held = {"allocations": {RP: {"resources": {"VCPU": 2}, "generation": 1}}}
    server = serve((200, {}, held), (200, {}, held), (200, {}, {"allocations": {}}), (404, {}))
    book.expect(("allocations", "c1"), {RP: {"VCPU": 2}})
    book.expect(("allocations", "c2"), {})
    book.expect(("allocations", "c3"), {}, {RP: {"VCPU": 1}})
    book.expect(("inventories", "p1"), {"VCPU": 8})
    wrong = book.verify(server.url, HEADERS)
    assert wrong == [
        f"allocations of c2: placement has {{'{RP}': {{'VCPU': 2}}}}, expected one of [{{}}]",
        "inventories of p1: placement has None, expected one of [{'VCPU': 8}]",
    ]
