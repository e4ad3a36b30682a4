"""API errors: one exception that is a Kubernetes ``kind: Status`` on the wire, both ways."""
from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class ApiError(Exception):
    """An API failure with the HTTP code and the Status reason the real apiserver would give."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status

    @staticmethod
    def from_status(status: dict[str, Any]) -> ApiError:
        """Rebuilds the error a server sent (a ``Gone`` for code 410)."""
        code = int(status.get("code") or 500)
        reason = status.get("reason") or REASONS.get(code, "Unknown")
        message = status.get("message") or reason
        if code == 410:
            return Gone(message)
        return ApiError(code, reason, message, status.get("details"))

    @staticmethod
    def for_code(code: int, message: str) -> ApiError:
        """A generic error; a 404 or 405 carries empty details, as kube-apiserver's (clients read them)."""
        return ApiError(code, REASONS.get(code, "Unknown"), message, {} if code in (404, 405) else None)

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


class Gone(ApiError):
    """The asked-for resourceVersion is older than the event log keeps: re-list."""

    def __init__(self, message: str):
        super().__init__(410, "Gone", message)


def _about(plural: str, name: str, group: str) -> tuple[str, dict[str, Any]]:
    """How upstream names an object in a message (``deployments.apps "web"``) and its Status details."""
    resource = f"{plural}.{group}" if group else plural
    return f'{resource} "{name}"', {"name": name, **({"group": group} if group else {}), "kind": plural}


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    what, details = _about(plural, name, group)
    return ApiError(404, "NotFound", f"{what} not found", details)


def already_exists(plural: str, name: str, group: str = "") -> ApiError:
    what, details = _about(plural, name, group)
    return ApiError(409, "AlreadyExists", f"{what} already exists", details)


def conflict(plural: str, name: str, group: str = "") -> ApiError:
    what, details = _about(plural, name, group)
    return ApiError(409, "Conflict", f"Operation cannot be fulfilled on {what}: the object has been modified; "
                                     "please apply your changes to the latest version and try again", details)


def invalid(kind: str, name: str, field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {field}: {message}',
        {"name": name, "kind": kind, "causes": [{"field": field, "message": message}]},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)
