"""Schemathesis against ``GET /openapi.json``: the document says what the server does.

For every operation Schemathesis sends requests the document allows and requests it
forbids, and checks every answer: no 5xx, a status and a body the document lists
(``Allow`` on a 405 included), schema-valid requests accepted and schema-invalid ones
refused. Then a stateful phase chains operations through the ids they answer (create,
sign, resume, complete, abort). The run is bounded (``MAX_EXAMPLES`` per operation) and
derandomised, so it runs the same cases every time: about a minute on 2 cores.

What the document cannot say is configured here, each with its reason:

- 413 and 422 answer schema-valid requests that break the server's configured rules
  (``OBITOX_MAX_FILE_SIZE``, allowed types, dangerous files): the document names those
  answers in each operation's responses, but the limits are the host's, not a schema's.
  A 413 also refuses a schema-invalid body past ``OBITOX_MAX_REQUEST_SIZE``.
- The stateful phase follows the document's links only. Inferred ones would send a
  single upload's id to the multipart routes, which answer that with a documented 400.
  There a 400 may also answer a schema-valid request that does not fit the upload it
  names (part numbers past its ``totalParts``); the stateless phase still fails on any
  400 to a schema-valid request.
- A whole number sent as a float (``2.0``) is an integer to JSON Schema, but the
  server's integers are strict (marshmallow ``Integer(strict=True)``) and refuse it;
  JSON Schema has no word for that, so bodies are sent with ``2`` instead.
- ``GET /events`` is left out: its answer is an endless ``text/event-stream`` that a
  WSGI call would read forever. ``tests/test_events.py`` reads it over HTTP, its errors
  included, and ``tests/test_openapi.py`` checks it is documented.
- A listing's ``cursor`` is opaque: only a ``nextCursor`` the server handed out (for
  this caller and these filters) continues a listing, so a made-up one is a 400 that
  the document names but cannot tell from the string. Cases with a cursor skip the
  check that a schema-valid request is accepted (``tests/test_manage.py`` checks
  cursors).
- A ``deepObject`` query value that is a list or an object (``metadata[profile]``
  generated as ``[]``, ``{}``, ``["null"]`` or ``{"a": "null"}``) has no wire form of its own:
  it reaches the server as nothing, as one plain string, or as a longer name
  (``metadata[profile][a]=null``), each of which the document allows. Cases holding one
  skip the check that a schema-invalid request is refused; a name given twice is
  refused (``tests/test_companion.py``).
- ``GET /uploads/batch`` is served, by ``GET /uploads/{uploadId}`` (as a 404), and
  ``GET /s3/multipart/{uploadId}/complete`` by the part-URL route (as a 400), so the
  ``Allow`` of those URLs lists a GET that their own paths do not have in the document.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from conftest import make_app
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.checks import allow_header_conformance, unsupported_method
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from flask_obitox import MemoryStateBackend

#: Examples per operation (and steps of the stateful phase).
MAX_EXAMPLES = 25
CALLER = {"X-User": "alice"}
CONFIG = SchemathesisConfig.from_str(
    """
    [checks.positive_data_acceptance]
    expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422"]

    [checks.negative_data_rejection]
    expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422"]

    [phases.stateful.inference]
    algorithms = []

    [phases.stateful.checks.positive_data_acceptance]
    expected-statuses = ["2xx", "400", "401", "403", "404", "409", "413", "422"]
    """
)
#: Operations whose URLs another route also serves, for GET (see above), and the checks
#: that send those URLs the methods their paths do not document.
OVERLAPPED = {"POST /uploads/batch", "POST /s3/multipart/{uploadId}/complete"}
OVERLAP_CHECKS = [allow_header_conformance, unsupported_method]
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _whole_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_floats_as_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_floats_as_ints(item) for key, item in value.items()}
    return value


def _unsendable_deep_object(query: Any) -> bool:
    """Whether a ``deepObject`` query value is one the wire cannot carry (see above),
    before serialisation (``metadata`` a dict) or after (``metadata[...]`` names)."""
    for name, value in (query or {}).items():
        if isinstance(value, dict) and not value and "[" in name:
            return True
        if isinstance(value, dict):
            inner = {f"{name}[{key}]": item for key, item in value.items()}
            if _unsendable_deep_object(inner):
                return True
        elif "[" in name and ("][" in name or (isinstance(value, list) and len(value) < 2)):
            return True
    return False


@pytest.fixture
def app(s3: Any) -> Flask:
    """Without rate limits or caps on open uploads: this run sends hundreds of requests
    a minute as one owner and leaves its uploads open, and what it checks is the
    document, not the guards (tests/test_rate_limits.py, tests/test_multipart.py)."""
    app, _ = make_app(
        MemoryStateBackend(),
        OBITOX_RATE_LIMITS="",
        OBITOX_MAX_OPEN_MULTIPART=0,
        OBITOX_MAX_OPEN_BYTES=0,
    )
    return app


@pytest.fixture
def api(app: Flask) -> Any:
    api = schemathesis.openapi.from_wsgi("/obitox/openapi.json", app, config=CONFIG).exclude(
        path="/events"
    )

    @api.hook
    def map_body(context: Any, body: Any) -> Any:
        return _whole_floats_as_ints(body)

    return api


def _validate(case: Any, response: Any, **transport: Any) -> None:
    excluded = OVERLAP_CHECKS if case.operation.label in OVERLAPPED else []
    if case.query and "cursor" in case.query:
        excluded = [*excluded, positive_data_acceptance]
    if _unsendable_deep_object(case.query):
        excluded = [*excluded, negative_data_rejection]
    # The caller's headers go with the probes some checks send (OPTIONS, TRACE, ...).
    case.validate_response(
        response, excluded_checks=excluded, headers=CALLER, transport_kwargs=transport
    )


schema = schemathesis.pytest.from_fixture("api").exclude(path_regex="/events$")


@schema.parametrize()
@SETTINGS
def test_every_operation_answers_as_documented(case: Any) -> None:
    _validate(case, case.call(headers=CALLER))


def test_chained_operations_answer_as_documented(api: Any) -> None:
    workflow = api.as_state_machine()

    class Calls(workflow):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": CALLER}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            _validate(case, response, **kwargs)

    run_state_machine_as_test(Calls, settings=SETTINGS)
