"""Malformed requests through the front door: random JSON bodies and bytes that
are not JSON, sent to a provider and a consumer that exist (with the provider's
real generation, half the time), garbage microversions and query strings never
get a 5xx; haproxy refuses oversized bodies and cuts off clients too slow to
send their headers."""

import os
import socket
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=120, deadline=None)
# {rp}: a provider that exists (with inventory), so a body is read and judged,
# not refused with a 404 before it is; its generation is the real one when the
# example asks for it, so the body gets past the generation check too.
TARGETS = [
    ("POST", "/resource_providers"),
    ("PUT", "/resource_providers/{rp}"),
    ("PUT", "/resource_providers/{rp}/inventories"),
    ("PUT", "/resource_providers/{rp}/traits"),
    ("PUT", "/resource_providers/{rp}/aggregates"),
    ("PUT", "/allocations/{consumer}"),
    ("POST", "/allocations"),
    ("POST", "/reshaper"),
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
# A header value: printable, not starting with a space (HTTP forbids it).
header_value = st.from_regex(r"[!-~][ -~]{0,40}", fullmatch=True)
JSON_CONTENT = {"content-type": "application/json"}


def request(placement_url, admin_headers, method, path, **kwargs):
    headers = {**admin_headers, **kwargs.pop("headers", {})}
    resp = requests.request(method, placement_url + path, headers=headers, timeout=20, **kwargs)
    assert resp.status_code < 500, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
    return resp


@pytest.fixture(scope="module")
def real(placement_url, admin_headers):
    """A provider with inventory and a consumer holding an allocation on it."""
    name = f"fuzz-{uuid.uuid4().hex[:12]}"
    rp = requests.post(f"{placement_url}/resource_providers", json={"name": name}, headers=admin_headers, timeout=10)
    rp = rp.json()["uuid"]
    body = {"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 64}, "MEMORY_MB": {"total": 4096}}}
    url = f"{placement_url}/resource_providers/{rp}/inventories"
    resp = requests.put(url, json=body, headers=admin_headers, timeout=10)
    assert resp.status_code == 200, resp.text
    consumer = str(uuid.uuid4())
    body = {
        "allocations": {rp: {"resources": {"VCPU": 1}}},
        "project_id": consumer,
        "user_id": consumer,
        "consumer_generation": None,
        "consumer_type": "INSTANCE",
    }
    resp = requests.put(f"{placement_url}/allocations/{consumer}", json=body, headers=admin_headers, timeout=10)
    assert resp.status_code == 204, resp.text
    return {"rp": rp, "consumer": consumer}


def generation(placement_url, admin_headers, real):
    resp = requests.get(f"{placement_url}/resource_providers/{real['rp']}", headers=admin_headers, timeout=10)
    return resp.json()["generation"]


def fuzz_targets(placement_url, admin_headers, real, bodies, as_json=True):
    """Every target with `bodies` (a strategy); the statuses, by target. A dict
    body for the provider's collections gets its real generation when the
    example says so."""
    seen = Counter()

    @FUZZ
    @given(target=st.sampled_from(TARGETS), body=bodies, with_generation=st.booleans())
    def fuzz(target, body, with_generation):
        method, template = target
        if with_generation and isinstance(body, dict) and template.startswith("/resource_providers/{rp}"):
            body = {**body, "resource_provider_generation": generation(placement_url, admin_headers, real)}
        send = {"json": body} if as_json else {"data": body, "headers": JSON_CONTENT}
        if template == "/reshaper" and os.environ.get("PLACEMENT_SERVICE_TOKEN"):
            # Keystone mode: only a service may reshape (a project admin gets 403, body unread).
            send["headers"] = {**send.get("headers", {}), "x-auth-token": os.environ["PLACEMENT_SERVICE_TOKEN"]}
        resp = request(placement_url, admin_headers, method, template.format(**real), **send)
        seen[(template, resp.status_code)] += 1

    fuzz()
    print(f"fuzz: {dict(sorted(seen.items()))}")
    # The provider and the consumer exist, and the caller may: no body was refused unread.
    assert [key for key in seen if key[1] == 403 or (key[1] == 404 and "{" in key[0])] == [], seen
    return seen


def test_random_json_bodies_are_client_errors(placement_url, admin_headers, real):
    seen = fuzz_targets(placement_url, admin_headers, real, json_values)
    # Bodies were judged: some refused as invalid (400) at every target.
    assert {template for template, status in seen if status == 400} == {template for _, template in TARGETS}, seen


def test_bytes_that_are_not_json_are_client_errors(placement_url, admin_headers, real):
    fuzz_targets(placement_url, admin_headers, real, st.binary(max_size=300), as_json=False)


@FUZZ
@given(value=header_value | printable.map(lambda version: f"placement {version}".strip()))
def test_garbage_microversions_are_client_errors(placement_url, admin_headers, value):
    request(placement_url, admin_headers, "GET", "/resource_providers", headers={"openstack-api-version": value})


@FUZZ
@given(path=st.sampled_from(["/allocation_candidates", "/resource_providers", "/usages", "/traits"]), query=printable)
def test_garbage_query_strings_are_client_errors(placement_url, admin_headers, path, query):
    request(placement_url, admin_headers, "GET", f"{path}?{query}")


@pytest.mark.parametrize("query", ["%80", "name=%ff%fe", "resources=VCPU:1&member_of=%c3"])
@pytest.mark.parametrize("path", ["/usages", "/resource_providers", "/allocation_candidates"])
def test_a_query_string_that_is_not_utf8_is_a_json_400(placement_url, admin_headers, path, query):
    resp = request(placement_url, admin_headers, "GET", f"{path}?{query}")
    assert resp.status_code == 400, resp.text
    (error,) = resp.json()["errors"]
    assert error["title"] == "Bad Request" and "not UTF-8" in error["detail"], error


@pytest.mark.parametrize("body", [b"Infinity", b'{"name": NaN}', b'{"name": "x", "name": 1}', b"\xff\xfe{}"])
def test_json_oddities_are_client_errors(placement_url, admin_headers, body):
    request(
        placement_url,
        admin_headers,
        "POST",
        "/resource_providers",
        data=body,
        headers={"content-type": "application/json"},
    )


def test_a_body_over_one_megabyte_is_refused_by_haproxy(placement_url, admin_headers):
    resp = request(placement_url, admin_headers, "POST", "/resource_providers", data=b"{" + b" " * 2_000_000 + b"}")
    assert resp.status_code == 413
    assert "1 MiB" in resp.json()["errors"][0]["detail"]


def test_a_chunked_body_is_asked_for_a_length(placement_url, admin_headers):
    chunks = (b" " * 65536 for _ in range(32))  # 2 MiB, no content-length
    resp = request(placement_url, admin_headers, "POST", "/resource_providers", data=chunks)
    assert resp.status_code == 411
    assert "Content-Length" in resp.json()["errors"][0]["detail"]


def test_a_client_too_slow_to_send_its_headers_is_cut_off(placement_url):
    url = urlsplit(placement_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: placement\r\n")  # and never the blank line
        started = time.monotonic()
        answer = conn.recv(4096)
        waited = time.monotonic() - started
    print(f"slow client: cut off after {waited:.1f}s with {answer[:12]!r}")
    assert answer.startswith(b"HTTP/1.1 408")
    assert 9 < waited < 12


@pytest.mark.parametrize("header", [{"content-type": "text/plain"}, {"accept": "text/html"}, {"x-auth-token": ""}])
def test_odd_headers_are_not_server_errors(placement_url, admin_headers, header):
    request(placement_url, admin_headers, "POST", "/resource_providers", data=b'{"name": "x"}', headers=header)
