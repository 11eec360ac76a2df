"""The two ways a template can fail: refused when saved, or failed when rendered for one person."""

from __future__ import annotations

from liquid.exceptions import (
    BlockNestingError,
    ContextDepthError,
    LiquidError,
    LocalNamespaceLimitError,
    LoopIterationLimitError,
    OutputStreamLimitError,
)

from tidings.errors import InvalidInput


def _located(field: str, line: int | None, column: int | None, detail: str) -> str:
    if line is None:
        return f"{field}: {detail}"
    return f"{field}: line {line}, column {column}: {detail}"


class TemplateInvalid(InvalidInput):
    """A template that does not parse; raised when it is saved, so it never reaches a delivery."""

    def __init__(self, detail: str, *, field: str, line: int | None, column: int | None) -> None:
        super().__init__(_located(field, line, column, detail), field=field)
        self.detail = detail
        self.line = line
        self.column = column


class RenderFailed(Exception):
    """Rendering for one person failed; the delivery is marked failed, as in Customer.io.

    ``variable`` names the undefined variable, as written, when that is the cause; ``limit`` names the
    ``Limits`` field that was exceeded when a resource limit is the cause.
    """

    def __init__(
        self,
        detail: str,
        *,
        field: str,
        line: int | None,
        column: int | None,
        variable: str | None = None,
        limit: str | None = None,
    ) -> None:
        self.message = _located(field, line, column, detail)
        super().__init__(self.message)
        self.detail = detail
        self.field = field
        self.line = line
        self.column = column
        self.variable = variable
        self.limit = limit


class SourceProblem(Exception):
    """A parse failure independent of the field it came from, so parsed templates can be shared."""

    def __init__(self, detail: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.line = line
        self.column = column

    def describe(self) -> str:
        if self.line is None:
            return self.detail
        return f"line {self.line}, column {self.column}: {self.detail}"


def position(err: LiquidError) -> tuple[int | None, int | None]:
    """1-based line and column of the token an error points at, if it points anywhere."""
    token = err.token
    if token is None or not token.source:
        return None, None
    try:
        found = err.context()
    except ValueError:
        return None, None
    if found is None:
        return None, None
    return found[0], found[1] + 1


# Which ``Limits`` field each resource error stands for.
LIMIT_ERRORS: tuple[tuple[type[LiquidError], str], ...] = (
    (LoopIterationLimitError, "loop_iterations"),
    (OutputStreamLimitError, "output_bytes"),
    (ContextDepthError, "depth"),
    (BlockNestingError, "depth"),
    (LocalNamespaceLimitError, "local_namespace"),
)
