"""The apiserver's error answers: a ``Status`` body with code, reason and message."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "already_exists", "conflict", "forbidden", "invalid", "not_found"]


class ApiError(Exception):
    """A request the fake apiserver refuses, answered as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(group_resource: str, name: str) -> dict[str, Any]:
    plural, _, group = group_resource.partition(".")
    found: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        found["group"] = group
    return found


def not_found(group_resource: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{group_resource} "{name}" not found', _details(group_resource, name)
    )


def already_exists(group_resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{group_resource} "{name}" already exists',
        _details(group_resource, name),
    )


def conflict(group_resource: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {group_resource} "{name}": {why}',
        _details(group_resource, name),
    )


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(kind_group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """``Deployment.apps "web" is invalid: spec.x: Invalid value: ...`` (422)."""
    text = ", ".join(f"{field}: {message}" for field, message in causes)
    kind, _, group = kind_group.partition(".")
    details: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": message, "field": field}
            for field, message in causes
        ],
    }
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{kind_group} "{name}" is invalid: {text}', details)


def forbidden(group_resource: str, name: str, why: str) -> ApiError:
    what = f'{group_resource} "{name}"' if name else group_resource
    return ApiError(403, "Forbidden", f"{what} is forbidden: {why}", _details(group_resource, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)
