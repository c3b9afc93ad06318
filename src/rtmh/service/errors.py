"""The failures of a human action, by what the caller should do about them.

The API maps each class to one HTTP status (:mod:`rtmh.api.problems`); the CLI prints the message
as one line. Messages say what to fix and never contain a secret.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class; ``status`` is the HTTP status the API answers with."""

    status = 400
    title = "Bad request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status = 404
    title = "Not found"


class Conflict(ServiceError):
    """The action does not fit the current state (e.g. a status change the workflow refuses)."""

    status = 409
    title = "Conflict"


class Invalid(ServiceError):
    """A field's value is refused; ``field`` names it (dotted for nested fields)."""

    status = 422
    title = "Invalid field"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
