"""Domain errors: an HTTP status, the platform's error message and its data, nothing else.

The error middleware renders every ApiError into the error envelope; nothing here knows about
aiohttp or CouchDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

JsonObject = dict[str, Any]


class ApiError(Exception):
    """An answer the platform gives on purpose: status + message + data (+ headers)."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        data: JsonObject | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{int(status)} {message}")
        self.status = status
        self.message = message
        self.data: JsonObject = {} if data is None else data
        self.headers: dict[str, str] = dict(headers or {})


class ValidationFailed(ApiError):
    """400 "validation error" with per-field, per-rule details."""

    def __init__(self, fields: JsonObject) -> None:
        super().__init__(HTTPStatus.BAD_REQUEST, "validation error", fields)
        self.fields = fields


def validation_error(path: str, rule: str, detail: JsonObject) -> ValidationFailed:
    return ValidationFailed({path: {rule: detail}})


def invalid_json() -> ValidationFailed:
    return validation_error(
        "json", "invalid", {"message": "All JSON must be valid", "target": "body"}
    )


def bad_identifier(cause: str) -> ApiError:
    return ApiError(
        HTTPStatus.NOT_FOUND, "bad_identifier", {"cause": cause, "message": "bad identifier"}
    )


def invalid_account_id(value: str) -> ApiError:
    message = "missing account_id" if value == "" else f"invalid account_id '{value}'"
    return ApiError(HTTPStatus.NOT_FOUND, "bad identifier", {"message": message})


def not_found() -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, "not_found", {"message": "not found"})


def faulty_request(message: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, "faulty_request", {"message": message})


def invalid_credentials() -> ApiError:
    return ApiError(
        HTTPStatus.UNAUTHORIZED, "invalid_credentials", {"message": "invalid credentials"}
    )


def expired_credentials() -> ApiError:
    """A well-formed token that expired or whose account is gone: the platform's other 401."""
    return ApiError(HTTPStatus.UNAUTHORIZED, "invalid credentials", {})


def forbidden() -> ApiError:
    return ApiError(HTTPStatus.FORBIDDEN, "forbidden", {"message": "forbidden"})


def method_not_allowed(allowed: list[str]) -> ApiError:
    return ApiError(
        HTTPStatus.METHOD_NOT_ALLOWED,
        "invalid_method",
        {"message": "method not allowed"},
        headers={"Allow": ", ".join(allowed)},
    )


def document_too_large() -> ApiError:
    """CouchDB refused a document for its size: the client's input was too big, not an outage."""
    return ApiError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "validation error",
        {"document": {"maxSize": {"message": "the document is larger than the datastore accepts"}}},
    )


def datastore_conflict() -> ApiError:
    return ApiError(HTTPStatus.CONFLICT, "datastore_conflict", {"message": "conflicting documents"})


def gone_v1() -> ApiError:
    return ApiError(
        HTTPStatus.GONE,
        "gone",
        {
            "message": "API version 1 is not supported. "
            "Please upgrade your code to use version 2."
        },
    )


def payload_too_large(limit_bytes: int) -> ApiError:
    return ApiError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "validation error",
        {
            "file": {
                "maxSize": {
                    "message": f"Payload or Files must not be more than {limit_bytes} bytes",
                    "target": limit_bytes,
                }
            }
        },
    )


def bad_base64() -> ApiError:
    return ApiError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "validation error",
        {"file": {"encoding": {"message": "failed to decode base64 data"}}},
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        {"message": "unsupported media type", "cause": content_type},
    )


def not_acceptable(cause: str, message: str) -> ApiError:
    """406: a download format that cannot be produced, or stored audio that cannot be decoded
    (docs/audio.md)."""
    return ApiError(HTTPStatus.NOT_ACCEPTABLE, "not_acceptable",
                    {"message": message, "cause": cause})


def range_not_satisfiable(length: int) -> ApiError:
    return ApiError(
        HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        {"message": "range not satisfiable"},
        headers={"Content-Range": f"bytes */{length}"},
    )


def unspecified_fault(cause: str | None = None) -> ApiError:
    data: JsonObject = {"message": "unspecified fault"}
    if cause is not None:
        data["cause"] = cause
    return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "unspecified_fault", data)


def shutting_down() -> ApiError:
    """A request that arrived after the drain's grace period (docs/operations.md, "Shutdown"):
    another instance should take it."""
    return ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "shutting_down",
                    {"message": "this instance is shutting down"},
                    headers={"Connection": "close", "Retry-After": "1"})


class DatastoreError(ApiError):
    """CouchDB could not do what we asked: always a 503 (docs/decisions.md P-16)."""


def datastore_unreachable(timed_out: bool = True) -> DatastoreError:
    """CouchDB did not answer: it timed out, or (timed_out=False) refused the connection."""
    message = "datastore timeout" if timed_out else "datastore unreachable"
    return DatastoreError(
        HTTPStatus.SERVICE_UNAVAILABLE, "datastore_unreachable", {"message": message}
    )


def invalid_request(cause: str) -> ApiError:
    """CouchDB refused a value of the request as malformed (docs/decisions.md N-8)."""
    return ApiError(HTTPStatus.BAD_REQUEST, "invalid request",
                    {"message": "a value of the request cannot be used", "cause": cause})


def datastore_missing(db_name: str) -> DatastoreError:
    return DatastoreError(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "datastore_missing",
        {"message": "data collection missing: database not found", "cause": db_name},
    )


def datastore_missing_view(view: str) -> DatastoreError:
    return DatastoreError(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "datastore_missing_view",
        {"message": "datastore missing view", "cause": view},
    )


def datastore_fault(cause: str) -> DatastoreError:
    return DatastoreError(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "datastore_fault",
        {"message": "datastore fatal error", "cause": cause},
    )
