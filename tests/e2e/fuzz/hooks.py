"""Schemathesis extension of tests/e2e/tests/fuzz.rs and `make fuzz`: the shop's own error contract.

schemathesis's built-in checks see a 4xx only as a status; what the shop promises of one is more
(services/runtime/src/problem.rs, docs/api.md): every client error, documented or not (a 404 of an
unknown path, a 405 of an unknown method), is an RFC 9457 problem document, and a rejected input
names its offending field. This check holds every response with a 4xx status to that:

- `Content-Type` is `application/problem+json`, and the body a JSON object whose `title` is a
  string and whose `status` equals the response's;
- a 400, 415 or 422 (the statuses that reject an input) carries `field`, a non-empty string that,
  or whose first segment (before `.` or `[`), is something the request had or could have had: one of the
  operation's parameters, a member of its documented body, a member the case sent, `body` (the
  document as a whole), `Content-Type`, `query` (a query string that is not `a=b&c=d` at all) or
  `path` (the request path as a whole, which the gateway names when it refuses one).

Through the gateway (SHOP_FUZZ_VIA_GATEWAY=1) two more rules apply. A request head over 32 KiB
(a query of 200 long SKU codes, say) is refused by the gateway's HTTP layer (hyper) with a bare 431
before any request exists: hyper writes that answer itself and offers no hook for its body, so a 431
there is exempt from the problem-document rule and from the document's statuses. That is a known gap
(closing it means checking the head size in the gateway before hyper does); the services, whose
limit is larger, answer such heads themselves. And the gateway refuses request
paths that upstream servers could resolve differently (a back slash, `;`, an encoded slash or dot,
a dot segment; services/gateway/src/routes.rs `ambiguous_path`) with a 400 problem on `path`, before
any route. A path parameter generated with such a character is valid for the service's document,
and the direct runs send it to the service; through the gateway that 400 is the edge's policy, so
`filter_failure` drops the status and acceptance failures of exactly those responses (the problem
document itself is still checked above).

Either way the rest of every check still applies to the other responses of the run.

A second check, no_server_error_inside_a_batch, holds the per-entry statuses of the two batch
endpoints to the rule of not_a_server_error.

Loaded through `hooks = "hooks.py"` in schemathesis.toml beside it (the test runs `st` from this
folder). Python is only the language schemathesis is extended in; nothing of the shop runs here.
"""

import json
import os
import re

import schemathesis

# Statuses that reject one input, so the problem must say which.
FIELD_STATUSES = {400, 415, 422}
# Names a problem may use for the request as a whole rather than one member of it.
WHOLE_REQUEST_FIELDS = {"body", "content-type", "path", "query"}
# Set by the test for the runs through shop-gateway.
VIA_GATEWAY = os.environ.get("SHOP_FUZZ_VIA_GATEWAY") == "1"
# Failures that say "the document did not foresee this answer", which the gateway's own refusal is not.
GATEWAY_POLICY_FAILURES = {"RejectedPositiveData", "UndefinedStatusCode"}


def _resolve(root, node, depth=0):
    """Follows local `$ref`s (`#/components/...`) inside the document."""
    while isinstance(node, dict) and "$ref" in node and depth < 32:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return {}
        node = root
        for part in ref[2:].split("/"):
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
        depth += 1
    return node if isinstance(node, dict) else {}


def _schema_members(root, schema, out, depth=0):
    """Every property name anywhere in a request body schema (nested objects, arrays, oneOf...)."""
    schema = _resolve(root, schema)
    if depth > 16 or not schema:
        return
    for name, sub in (schema.get("properties") or {}).items():
        out.add(name.lower())
        _schema_members(root, sub, out, depth + 1)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _schema_members(root, schema[key], out, depth + 1)
    for key in ("oneOf", "anyOf", "allOf", "prefixItems"):
        for sub in schema.get(key) or []:
            _schema_members(root, sub, out, depth + 1)


def _body_members(value, out, depth=0):
    """Every member name the case's body had (at any depth)."""
    if depth > 16:
        return
    if isinstance(value, dict):
        for name, sub in value.items():
            out.add(str(name).lower())
            _body_members(sub, out, depth + 1)
    elif isinstance(value, list):
        for sub in value:
            _body_members(sub, out, depth + 1)


def _known_fields(case):
    """Lower-cased names a problem's `field` may start with for this case."""
    names = set(WHOLE_REQUEST_FIELDS)
    operation = case.operation
    for parameter in operation.iter_parameters():
        names.add(parameter.name.lower())
    root = operation.schema.raw_schema
    raw_op = ((root.get("paths") or {}).get(operation.path) or {}).get(operation.method.lower()) or {}
    for parameter in raw_op.get("parameters") or []:
        name = _resolve(root, parameter).get("name")
        if name:
            names.add(name.lower())
    request_body = _resolve(root, raw_op.get("requestBody") or {})
    for media in (request_body.get("content") or {}).values():
        _schema_members(root, media.get("schema") or {}, names)
    for container in (case.query, case.headers, case.path_parameters):
        for name in container or {}:
            names.add(str(name).lower())
    _body_members(case.body, names)
    return names


@schemathesis.check
def problem_json_for_client_errors(ctx, response, case):
    """Every 4xx is application/problem+json; a rejected input names its field."""
    status = response.status_code
    if not 400 <= status < 500:
        return None
    if VIA_GATEWAY and status == 431:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/problem+json":
        raise AssertionError(
            f"{status} answered with Content-Type {content_type or '(none)'!r}, "
            f"not application/problem+json; body: {response.content[:300]!r}"
        )
    try:
        problem = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"{status} problem document is not JSON ({error}): {response.content[:300]!r}")
    if not isinstance(problem, dict):
        raise AssertionError(f"{status} problem document is not a JSON object: {problem!r}")
    if problem.get("status") != status:
        raise AssertionError(f"{status} problem document says status {problem.get('status')!r}: {problem!r}")
    if not isinstance(problem.get("title"), str):
        raise AssertionError(f"{status} problem document has no string title: {problem!r}")
    if status in FIELD_STATUSES:
        field = problem.get("field")
        if not isinstance(field, str) or not field:
            raise AssertionError(f"{status} problem does not name the offending field: {problem!r}")
        root = re.split(r"[.\[]", field, maxsplit=1)[0].lower()
        known = _known_fields(case)
        # A parameter's own name may hold a `.` or `[` (a fuzzed `?a.b=1`): the whole field counts too.
        if root not in known and field.lower() not in known:
            raise AssertionError(
                f"{status} problem names field {field!r}, which is neither a parameter, a body member "
                f"nor the body of {case.operation.label} (known: {sorted(known)}): {problem!r}"
            )
    return None


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    """Through the gateway: its refusal of an ambiguous path or an oversized head is not the service's to document."""
    if not VIA_GATEWAY or response is None:
        return True
    if type(failure).__name__ not in GATEWAY_POLICY_FAILURES:
        return True
    if response.status_code == 431:
        return False
    if response.status_code != 400:
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    return not (isinstance(problem, dict) and problem.get("title") == "Ambiguous request path")


@schemathesis.check
def no_server_error_inside_a_batch(ctx, response, case):
    """A batch answers 200 with one status per entry; an entry's status >= 500 is a server error too.

    POST /api/inventory/reservations/batch answers `{"results":[{"status":…,"body":…}]}` and POST
    /eureka/peerreplication/batch `{"statuses":[…]}`. not_a_server_error sees only the 200 around
    them (it let 130 entries answered 500 through, until this check).
    """
    if response.status_code != 200:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    statuses = []
    if isinstance(body.get("results"), list):
        statuses = [r.get("status") for r in body["results"] if isinstance(r, dict)]
    elif isinstance(body.get("statuses"), list):
        statuses = body["statuses"]
    failed = [(i, s) for i, s in enumerate(statuses) if isinstance(s, int) and s >= 500]
    if failed:
        raise AssertionError(
            f"{len(failed)} of {len(statuses)} batch entries answered >= 500 (first: entry {failed[0][0]}, "
            f"status {failed[0][1]}): {response.content[:400]!r}"
        )
    return None
