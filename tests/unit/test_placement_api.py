"""placedock.api.client's retries, against a scripted HTTP server on the
loopback (no stack): a 503 waits for its Retry-After, a read that went wrong
is sent again, a write whose first try may have been applied is not, and a
refused connection is tried again for any method."""

import socket
import time

import pytest
import requests
from placedock.api import client as placement_api


def client(url):
    return placement_api.Client(url, {"x-auth-token": "admin"})


def test_a_503_is_sent_again_after_its_retry_after(serve):
    server = serve((503, {"Retry-After": "1"}), 204)
    assert client(server.url).request("PUT", "/traits/CUSTOM_A").status_code == 204
    (first, second) = server.seen
    assert second[2] - first[2] >= 1.0, "sent again before Retry-After: 1 had passed"


@pytest.mark.parametrize("first", [502, 504, "drop"])
def test_a_put_that_may_have_been_applied_is_not_sent_again(serve, first):
    server = serve(first, 204)
    path = "/resource_providers/x/inventories"
    with pytest.raises(placement_api.ApiError, match="the outcome is unknown"):
        client(server.url).call("PUT", path, {"resource_provider_generation": 0}, expect=(200, 204))
    assert server.requests() == [("PUT", path)]


def test_a_delete_answered_504_is_read_back_not_sent_again(serve):
    server = serve(504, 404)
    resp = client(server.url).request("DELETE", "/resource_providers/x")
    assert resp.status_code == 404
    assert server.requests() == [("DELETE", "/resource_providers/x"), ("GET", "/resource_providers/x")]


def test_a_delete_still_there_after_a_502_is_an_unknown_outcome(serve):
    server = serve(502, 200)
    with pytest.raises(placement_api.ApiError, match="a GET of it then answered 200: the outcome is unknown"):
        client(server.url).request("DELETE", "/resource_providers/x")
    assert server.requests() == [("DELETE", "/resource_providers/x"), ("GET", "/resource_providers/x")]


def test_a_get_is_sent_again_after_a_read_timeout_and_a_502(serve, monkeypatch):
    monkeypatch.setattr(placement_api, "TIMEOUT", 0.5)
    server = serve("hang", 502, 200)
    assert client(server.url).request("GET", "/resource_providers").status_code == 200
    assert server.requests() == [("GET", "/resource_providers")] * 3


def test_a_refused_post_is_sent_again_once_the_server_listens(serve, monkeypatch):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = []
    real_sleep = time.sleep

    def sleep(seconds):
        # The client's pause before trying again: the server comes up meanwhile.
        if not started:
            started.append(serve(201, port=port))
        real_sleep(0)

    monkeypatch.setattr(time, "sleep", sleep)
    resp = client(f"http://127.0.0.1:{port}").request("POST", "/resource_providers", {"name": "a"})
    assert resp.status_code == 201
    assert started[0].requests() == [("POST", "/resource_providers")]


def test_a_refused_connection_is_raised_after_the_retries(serve, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pauses = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    with pytest.raises(requests.ConnectionError):
        client(f"http://127.0.0.1:{port}").request("PUT", "/traits/CUSTOM_A")
    assert len(pauses) == 3 and min(pauses) > 0, f"3 tries again, each after a pause: {pauses}"
