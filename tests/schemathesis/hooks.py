"""Schemathesis hooks for the AllSource server (loaded through SCHEMATHESIS_HOOKS).

- The OpenAPI document describes an NDJSON batch body (`application/x-ndjson`) as the
  array of its lines' objects; the serializer writes such an array as NDJSON, one compact
  JSON value a line. A value that is not an array (a negative case) becomes one line.
- Schemathesis cannot read Arrow IPC streams and Parquet files (queries with
  `Accept: application/vnd.apache.arrow.stream`, exports), so the check
  `binary_body_format` makes sure such a body is what its Content-Type says, by its
  leading magic bytes. Only the start: schemathesis keeps at most the first MiB of a
  body. The interop test reads whole streams and files with pyarrow.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()


# An Arrow IPC stream starts with a continuation marker (its schema message follows);
# a Parquet file with "PAR1".
MAGIC = {
    "application/vnd.apache.arrow.stream": b"\xff\xff\xff\xff",
    "application/vnd.apache.parquet": b"PAR1",
}


@schemathesis.check
def binary_body_format(ctx, response, case):
    """An Arrow or Parquet body starts with its format's magic bytes."""
    content_type = response.headers.get("content-type") or [""]
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    media_type = content_type.split(";")[0].strip().lower()
    magic = MAGIC.get(media_type)
    if magic is not None and case.method.upper() != "HEAD" and not response.content.startswith(magic):
        raise AssertionError(
            f"a {media_type} body must start with {magic!r}; it starts with {response.content[:16]!r}"
        )
