"""The workflow language: a campaign's ``steps``, parsed, checked and compiled to a graph of blocks.

A workflow is a list of blocks run in order. Branching blocks hold lists of blocks of their own
(``yes``/``no``, ``branches``, ``cohorts``, …); when a branch ends, the journey goes on with the block
after the branching block. Compiling flattens that tree: every block gets a unique id (its own ``id``, or
one made from its place, such as ``3.yes.0``) and the id of the block that follows it, so a journey's
position is one block id and never a stack.

Every error names the block (by id and place) and the field. Block types live in a registry
(:data:`BLOCK_TYPES`) so features outside this package (the LLM action) add their own; each type parses
its fields here and runs in :mod:`tidings.journeys.blocks`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tidings.errors import InvalidInput
from tidings.journeys import conditions as journey_conditions
from tidings.segments.conditions import ConditionError, parse

MAX_BLOCKS = 500
MAX_DEPTH = 20
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?|w|weeks?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class DefinitionError(InvalidInput):
    """A campaign definition that cannot be used; the message names the block and field."""


@dataclass(frozen=True)
class Block:
    id: str
    type: str
    # Where the block sits (``steps[2].yes[0]``), for messages.
    path: str
    # The type's own fields, as its parser returned them.
    spec: dict[str, Any]
    # The block to go on with, or None at the end of the workflow.
    next: str | None = None
    # Branching blocks: label → the first block of that branch (``next`` when the branch is empty).
    branches: dict[str, str | None] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class Workflow:
    start: str | None
    blocks: dict[str, Block]

    def first_of(self, label: str, block: Block) -> str | None:
        return block.branches.get(label, block.next)


@dataclass
class Parser:
    """What a block type's parser may use: error helpers that name the block, and nested step lists."""

    block_id: str
    path: str
    body: dict[str, Any]

    def fail(self, message: str, key: str | None = None) -> DefinitionError:
        where = f"{self.path}.{key}" if key else self.path
        return DefinitionError(f"block {self.block_id!r} ({where}): {message}", field=where)

    def text(self, key: str, *, required: bool = True, default: str | None = None) -> str | None:
        value = self.body.get(key)
        if value is None:
            if required:
                raise self.fail("is required", key)
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail("must be a non-empty string", key)
        return value

    def number(
        self, key: str, *, required: bool = True, low: float | None = None, high: float | None = None
    ) -> float | None:
        value = self.body.get(key)
        if value is None:
            if required:
                raise self.fail("is required", key)
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail("must be a number", key)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(f"must be between {low} and {high}", key)
        return float(value)

    def duration(self, key: str, *, required: bool = True) -> int | None:
        value = self.body.get(key)
        if value is None:
            if required:
                raise self.fail("is required", key)
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(str(exc), key) from None

    def mapping(self, key: str, *, required: bool = False) -> dict[str, Any]:
        value = self.body.get(key)
        if value is None:
            if required:
                raise self.fail("is required", key)
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
            raise self.fail("must be an object with string keys", key)
        return value

    def condition(self, key: str, *, required: bool = True) -> Any:
        """A segment-style condition document, checked now (see tidings.segments.conditions)."""

        value = self.body.get(key)
        if value is None:
            if required:
                raise self.fail("is required", key)
            return None
        try:
            # Journey-attribute leaves are checked here; the rest is the segment grammar.
            parse(journey_conditions.person_part(value, key), path=key)
        except ConditionError as exc:
            raise self.fail(exc.message, key) from None
        return value


@dataclass(frozen=True)
class BlockType:
    name: str
    # Checks the block's own fields and returns what the runner needs.
    parse: Callable[[Parser], dict[str, Any]]
    # Nested step lists: label → the key holding the list (or a function returning [(label, list)]).
    branches: Callable[[dict[str, Any]], list[tuple[str, Any]]] = lambda body: []
    # Customer.io's action type for the action APIs.
    action_type: str = ""


BLOCK_TYPES: dict[str, BlockType] = {}


def register(block_type: BlockType) -> None:
    """Add a block type (the extension point other features, such as the LLM action, use)."""
    BLOCK_TYPES[block_type.name] = block_type


def parse_duration(value: Any) -> int:
    """Seconds from 90, "90s", "15m", "2h", "3d", "1w" or {"days": 3, "hours": 2}."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30m, 2h, 3d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        found = _DURATION.match(value.lower())
        if not found:
            raise ValueError(f"{value!r} is not a duration such as 30m, 2h, 3d")
        seconds = float(found.group(1)) * _UNITS[found.group(2)[0]]
    elif isinstance(value, dict) and value and set(value) <= {"weeks", "days", "hours", "minutes", "seconds"}:
        seconds = 0.0
        for unit, amount in value.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float):
                raise ValueError(f"{unit} must be a number")
            seconds += float(amount) * _UNITS[unit[0]]
    else:
        raise ValueError("must be a duration such as 30m, 2h, 3d")
    if not 0 <= seconds <= 10 * 365 * 86400:
        raise ValueError("must be between 0 and 10 years")
    return int(seconds)


def compile_steps(steps: Any, *, path: str = "steps") -> Workflow:
    """Parse and compile a workflow; raise :class:`DefinitionError` naming the first bad block."""
    blocks: dict[str, Block] = {}
    start = _compile_list(steps, path, None, blocks, depth=0)
    return Workflow(start, blocks)


def _compile_list(
    steps: Any, path: str, after: str | None, blocks: dict[str, Block], *, depth: int
) -> str | None:
    """Compile a list of blocks that continues with ``after``; return the id of its first block."""
    if steps is None:
        return after
    if not isinstance(steps, list):
        raise DefinitionError(f"{path} must be a list of blocks", field=path)
    if depth > MAX_DEPTH:
        raise DefinitionError(f"{path}: branches nest deeper than {MAX_DEPTH}", field=path)
    ids = [_block_id(body, f"{path}[{index}]", blocks) for index, body in enumerate(steps)]
    # Reserve this list's ids before compiling nested lists, so a duplicate is reported where it repeats.
    for index, block_id in enumerate(ids):
        if block_id in blocks or ids.index(block_id) != index:
            raise DefinitionError(
                f"{path}[{index}]: block id {block_id!r} is used twice", field=f"{path}[{index}].id"
            )
    for block_id in ids:
        blocks[block_id] = None  # type: ignore[assignment]
    for index in reversed(range(len(steps))):
        body = steps[index]
        block_path = f"{path}[{index}]"
        block_id = ids[index]
        follow = ids[index + 1] if index + 1 < len(ids) else after
        kind = body.get("type")
        block_type = BLOCK_TYPES.get(kind) if isinstance(kind, str) else None
        if block_type is None:
            known = ", ".join(sorted(BLOCK_TYPES))
            raise DefinitionError(
                f"block {block_id!r} ({block_path}.type): unknown block type {kind!r}; "
                f"expected one of {known}",
                field=f"{block_path}.type",
            )
        name = body.get("name", "")
        if not isinstance(name, str):
            raise DefinitionError(
                f"block {block_id!r} ({block_path}.name): must be a string", field=f"{block_path}.name"
            )
        parser = Parser(block_id, block_path, body)
        spec = block_type.parse(parser)
        branches: dict[str, str | None] = {}
        for label, nested in block_type.branches(body):
            branches[label] = _compile_list(nested, f"{block_path}.{label}", follow, blocks, depth=depth + 1)
        blocks[block_id] = Block(block_id, kind, block_path, spec, follow, branches, name)
        if len(blocks) > MAX_BLOCKS:
            raise DefinitionError(f"a workflow may have at most {MAX_BLOCKS} blocks", field=path)
    return ids[0] if ids else after


def _block_id(body: Any, path: str, blocks: dict[str, Block]) -> str:
    if not isinstance(body, dict):
        raise DefinitionError(f"{path} must be a block object with a type", field=path)
    given = body.get("id")
    if given is None:
        # Made from the place, so it stays the same while the workflow above it does not change.
        return path.removeprefix("steps").replace("][", ".").strip("[]").replace("].", ".").replace("[", ".")
    if not isinstance(given, str) or not _ID.match(given):
        raise DefinitionError(f"{path}.id must be 1-100 letters, digits or _ . : -", field=f"{path}.id")
    return given
