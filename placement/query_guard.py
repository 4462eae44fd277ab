"""A query string that is not UTF-8 once percent-decoded gets a 400, not a 500.

webob decodes a query string as UTF-8 when a handler first reads it
(req.GET), and placement lets the UnicodeDecodeError reach its fault handler:
`GET /usages?%80` answered 500 (tests/faults/test_malformed.py's fuzzing
found it). install() puts guard() where outage.install() puts its
middleware, inside placement's fault handler and behind authentication: such a
request gets 400 Bad Request in placement's JSON error format, and placement
never sees it.
"""

from urllib.parse import unquote_to_bytes

import outage


def decodes(query):
    """Whether a WSGI QUERY_STRING (its bytes as latin-1) decodes as webob does."""
    raw = query.encode("latin-1").replace(b"+", b" ")
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def guard(application):
    def checked(environ, start_response):
        if decodes(environ.get("QUERY_STRING", "")):
            return application(environ, start_response)
        detail = "The query string is not UTF-8 once percent-decoded: percent-encode the UTF-8 of each value."
        return outage.json_error("400 Bad Request", "Bad Request", detail, environ, start_response)

    return checked


def install():
    """Every placement app built after this checks its query strings first."""
    outage.inside_fault_handler(guard)
