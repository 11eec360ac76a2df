"""One error family. Services raise these; each HTTP surface renders them in its own envelope."""

from __future__ import annotations


class TidingsError(Exception):
    status_code = 400
    name = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(TidingsError):
    status_code = 400
    name = "invalid_input"


class Unauthorized(TidingsError):
    status_code = 401
    name = "unauthorized"


class Forbidden(TidingsError):
    status_code = 403
    name = "forbidden"


class NotFound(TidingsError):
    status_code = 404
    name = "not_found"


class Conflict(TidingsError):
    status_code = 409
    name = "conflict"


class PayloadTooLarge(TidingsError):
    status_code = 413
    name = "payload_too_large"


class Suppressed(TidingsError):
    status_code = 400
    name = "suppressed"


class RateLimited(TidingsError):
    status_code = 429
    name = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutOfCredits(TidingsError):
    status_code = 402
    name = "out_of_credits"


class UpstreamFailed(TidingsError):
    """A service Tidings called on the caller's behalf (a model provider) failed."""

    status_code = 502
    name = "upstream_failed"
