"""Malformed requests through the front door: random JSON bodies, bytes that
are not JSON, garbage microversions and query strings never get a 5xx; haproxy
refuses oversized bodies and cuts off clients too slow to send their headers."""

import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
RP = str(uuid.uuid4())
TARGETS = [
    ("POST", "/resource_providers"),
    ("PUT", f"/resource_providers/{RP}"),
    ("PUT", f"/resource_providers/{RP}/inventories"),
    ("PUT", f"/resource_providers/{RP}/traits"),
    ("PUT", f"/resource_providers/{RP}/aggregates"),
    ("PUT", f"/allocations/{uuid.uuid4()}"),
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


def request(placement_url, admin_headers, method, path, **kwargs):
    headers = {**admin_headers, **kwargs.pop("headers", {})}
    resp = requests.request(method, placement_url + path, headers=headers, timeout=20, **kwargs)
    assert resp.status_code < 500, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
    return resp


@FUZZ
@given(target=st.sampled_from(TARGETS), body=json_values)
def test_random_json_bodies_are_client_errors(placement_url, admin_headers, target, body):
    request(placement_url, admin_headers, *target, json=body)


@FUZZ
@given(target=st.sampled_from(TARGETS), body=st.binary(max_size=300))
def test_bytes_that_are_not_json_are_client_errors(placement_url, admin_headers, target, body):
    request(placement_url, admin_headers, *target, data=body, headers={"content-type": "application/json"})


@FUZZ
@given(value=header_value | printable.map(lambda version: f"placement {version}".strip()))
def test_garbage_microversions_are_client_errors(placement_url, admin_headers, value):
    request(placement_url, admin_headers, "GET", "/resource_providers", headers={"openstack-api-version": value})


@FUZZ
@given(path=st.sampled_from(["/allocation_candidates", "/resource_providers", "/usages", "/traits"]), query=printable)
def test_garbage_query_strings_are_client_errors(placement_url, admin_headers, path, query):
    request(placement_url, admin_headers, "GET", f"{path}?{query}")


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
