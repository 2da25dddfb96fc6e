"""Schemathesis hooks for the AllSource server (loaded through SCHEMATHESIS_HOOKS).

The OpenAPI document describes an NDJSON batch body (`application/x-ndjson`) as the array
of its lines' objects; this serializer writes such an array as NDJSON, one compact JSON
value a line. A value that is not an array (schemathesis' negative cases) becomes one line.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()
