"""Spans to OTLP/HTTP (protobuf) for less CPU: the exporter's encoding, written out directly.

Loaded only with tracing on (core/telemetry.py). The SDK's exporter builds a protobuf
object for every span, attribute and value, then serializes them: about 28 µs of the
process's CPU per span, in the exporter's thread, more than making the span did
(docs/benchmarks.md, Tracing overhead). Here each span goes straight to its wire bytes,
and a key/value pair seen before (most of them: the method, the route, the statement,
the database's address) is taken from a bounded cache. The output is the same request
(`ExportTraceServiceRequest`); tests/core/test_telemetry.py decodes it with the
protobuf classes and compares it with the SDK's encoding of the same spans.

The HTTP side (endpoint, headers, TLS, compression, retries, timeouts, the size limit,
the exporter's own metrics) is the SDK's `OTLPSpanExporter`, unchanged.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

_logger = logging.getLogger(__name__)

_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
_pack_d = struct.Struct("<d").pack
_SMALL = [bytes((n,)) for n in range(128)]

# Span flags (trace.proto): the parent's is_remote is known, and whether it was remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    n &= 0xFFFF_FFFF_FFFF_FFFF  # int64: negative numbers as ten bytes, as protobuf does
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An `AnyValue` message's bytes (what the SDK's `_encode_value` builds)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(
            b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        )
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


class SpanEncoder:
    """Spans to the bytes of one `ExportTraceServiceRequest`, the SDK's grouping and order."""

    def __init__(self, cache_size: int = 4096) -> None:
        # (key, type, value) -> the KeyValue field's bytes; emptied when full.
        self._pairs: dict[tuple[str, type, Any], bytes] = {}
        self._cache_size = cache_size
        # Resources and scopes live as long as their provider and tracers: by identity,
        # holding the object so that its id is not reused.
        self._resources: dict[int, tuple[Any, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes]] = {}

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        pairs = self._pairs
        out = []
        for key, value in attributes.items():
            try:
                cache_key = (key, type(value), value)
                encoded = pairs.get(cache_key)
            except TypeError:  # a list: not hashable, not cached
                cache_key, encoded = None, None
            if encoded is None:
                try:
                    encoded = _field(tag, _key_value(key, value))
                except Exception as error:  # the SDK's encoder logs and goes on
                    _logger.exception("Failed to encode key %s: %s", key, error)
                    continue
                if cache_key is not None:
                    if len(pairs) >= self._cache_size:
                        pairs.clear()
                    pairs[cache_key] = encoded
            out.append(encoded)
        return b"".join(out)

    def _resource(self, resource: Any) -> bytes:
        found = self._resources.get(id(resource))
        if found is None or found[0] is not resource:
            found = (resource, _field(b"\x0a", self._attributes(b"\x0a", resource.attributes)))
            self._resources[id(resource)] = found
        return found[1]

    def _scope(self, scope: Any) -> bytes:
        """A `ScopeSpans`' scope and schema fields (its spans follow; field order is free)."""
        found = self._scopes.get(id(scope))
        if found is None or found[0] is not scope:
            body = b""
            schema = b""
            if scope is not None:
                body = (
                    (_field(b"\x0a", scope.name.encode()) if scope.name else b"")
                    + (_field(b"\x12", scope.version.encode()) if scope.version else b"")
                    + self._attributes(b"\x1a", scope.attributes)
                )
                if scope.schema_url:
                    schema = _field(b"\x1a", scope.schema_url.encode())
            found = (scope, _field(b"\x0a", body) + schema)
            self._scopes[id(scope)] = found
        return found[1]

    def span(self, span: ReadableSpan) -> bytes:
        context = span.context
        assert context is not None
        parts = [
            b"\x0a\x10",
            context.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            context.span_id.to_bytes(8, "big"),
        ]
        if context.trace_state:
            state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
            parts.append(_field(b"\x1a", state.encode()))
        parent = span.parent
        flags = _HAS_IS_REMOTE
        if parent is not None:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
            if parent.is_remote:
                flags |= _IS_REMOTE
        if span.name:
            parts.append(_field(b"\x2a", span.name.encode()))
        parts.append(b"\x30" + _SMALL[span.kind.value + 1])  # proto's kinds start at 1
        if span.start_time:
            parts.append(b"\x39" + _pack_q(span.start_time))
        if span.end_time:
            parts.append(b"\x41" + _pack_q(span.end_time))
        parts.append(self._attributes(b"\x4a", span.attributes))
        if span.dropped_attributes:
            parts.append(b"\x50" + _varint(span.dropped_attributes))
        for event in span.events:
            body = (
                (b"\x09" + _pack_q(event.timestamp) if event.timestamp else b"")
                + (_field(b"\x12", event.name.encode()) if event.name else b"")
                + self._attributes(b"\x1a", event.attributes)
                + (b"\x20" + _varint(event.dropped_attributes) if event.dropped_attributes else b"")
            )
            parts.append(_field(b"\x5a", body))
        if span.dropped_events:
            parts.append(b"\x60" + _varint(span.dropped_events))
        for link in span.links:
            link_flags = _HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0)
            body = (
                b"\x0a\x10"
                + link.context.trace_id.to_bytes(16, "big")
                + b"\x12\x08"
                + link.context.span_id.to_bytes(8, "big")
                + self._attributes(b"\x22", link.attributes)
                + (b"\x28" + _varint(link.dropped_attributes) if link.dropped_attributes else b"")
                + b"\x35"
                + _pack_i(link_flags)
            )
            parts.append(_field(b"\x6a", body))
        if span.dropped_links:
            parts.append(b"\x70" + _varint(span.dropped_links))
        status = span.status
        body = (_field(b"\x12", status.description.encode()) if status.description else b"") + (
            b"\x18" + _SMALL[status.status_code.value] if status.status_code.value else b""
        )
        parts.append(_field(b"\x7a", body))
        parts.append(b"\x85\x01" + _pack_i(flags))
        return b"".join(parts)

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """One export request's bytes: spans grouped by resource, then by scope (equal ones
        together, in the order first seen, as the SDK's encoder does)."""
        # (resource, [(scope, [span bytes])]); found by identity first, equality on a miss.
        groups: list[tuple[Any, list[tuple[Any, list[bytes]]]]] = []
        by_id: dict[tuple[int, int], list[bytes]] = {}
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            bucket = by_id.get((id(resource), id(scope)))
            if bucket is None:
                bucket = by_id[id(resource), id(scope)] = _bucket(groups, resource, scope)
            bucket.append(_field(b"\x12", self.span(span)))
        out = []
        for resource, scopes in groups:
            body = self._resource(resource) + b"".join(
                _field(b"\x12", self._scope(scope) + b"".join(encoded)) for scope, encoded in scopes
            )
            if resource.schema_url:
                body += _field(b"\x1a", resource.schema_url.encode())
            out.append(_field(b"\x0a", body))
        return b"".join(out)


def _bucket(
    groups: list[tuple[Any, list[tuple[Any, list[bytes]]]]], resource: Any, scope: Any
) -> list[bytes]:
    """The list of the spans of `resource` and `scope` (equal ones: the same list)."""
    scopes = next((found for known, found in groups if known == resource), None)
    if scopes is None:
        scopes = []
        groups.append((resource, scopes))
    for known_scope, encoded in scopes:
        if known_scope == scope:
            return encoded
    encoded = []
    scopes.append((scope, encoded))
    return encoded


class OTLPExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter, with the encoding above.

    `export` is the SDK's (opentelemetry-exporter-otlp-proto-http, pinned), but for the
    line that encodes; it uses the SDK exporter's attributes, so a new version of the
    SDK is checked by the tests that export through it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return super().export(spans)  # logs it and fails
        with self._metrics.export_operation(len(spans)) as result:
            try:
                serialized = self._encoder.encode(spans)
            except Exception as error:
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(serialized, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes.",
                    len(serialized),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(serialized)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(serialized)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                    if sent.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
