"""Message content kept in files (``tidings messages apply``): layouts, snippets and transactional messages,
so a team can keep templates in version control and apply them like migrations.

A file (YAML or JSON) has any of three lists::

    layouts:  [{name, body | body_file}]
    snippets: [{name, value | value_file}]
    messages: [{name, trigger_name?, type?, description?, content: {...}, layout?: <layout name>,
                languages?: {...}, link_tracking?, open_tracking?, send_to_unsubscribed?, hide_message_body?,
                queue_drafts?}]

A content field may be given as ``<field>_file``: a path, relative to the file, whose text is the field
(an HTML body kept as its own file). Layouts and snippets are matched by name, messages by trigger name
(else by name). Everything is applied in one transaction: all of the file, or none of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tidings.errors import InvalidInput, TidingsError
from tidings.messaging import templates

SECTIONS = ("layouts", "snippets", "messages")


def _inline_files(item: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """``<key>_file: path`` becomes ``<key>: <the file's text>``."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key.endswith("_file") and isinstance(value, str):
            path = base / value
            try:
                out[key[: -len("_file")]] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"{where}.{key}: cannot read {path}: {exc}") from exc
        else:
            out[key] = value
    return out


def _items(document: dict[str, Any], section: str) -> list[dict[str, Any]]:
    items = document.get(section) or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InvalidInput(f"{section} must be a list of objects")
    return items


def _located(exc: TidingsError, where: str) -> InvalidInput:
    return InvalidInput(f"{where}: {exc.message}", field=where)


def apply(
    session: Session, workspace_id: int, document: Any, *, base: Path, now: int
) -> list[dict[str, Any]]:
    """Create or update what ``document`` describes; one result row per item."""
    if not isinstance(document, dict):
        raise InvalidInput(f"the file must be an object with {', '.join(SECTIONS)}")
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise InvalidInput(f"unknown section {unknown[0]!r} (allowed: {', '.join(SECTIONS)})")
    results: list[dict[str, Any]] = []
    layouts = {row["name"]: row for row in templates.list_layouts(session, workspace_id)}
    for index, raw in enumerate(_items(document, "layouts")):
        where = f"layouts[{index}]"
        item = _inline_files(raw, base, where)
        try:
            current = layouts.get(item.get("name"))
            if current is None:
                view, action = templates.save_layout(session, workspace_id, item, now=now), "created"
            elif current["body"] != item.get("body"):
                view = templates.save_layout(session, workspace_id, item, now=now, layout_id=current["id"])
                action = "updated"
            else:
                view, action = current, "unchanged"
        except TidingsError as exc:
            raise _located(exc, where) from exc
        layouts[view["name"]] = view
        results.append({"kind": "layout", "action": action, "id": view["id"], "name": view["name"]})
    snippets = {row["name"]: row["value"] for row in templates.list_snippets(session, workspace_id)}
    for index, raw in enumerate(_items(document, "snippets")):
        where = f"snippets[{index}]"
        item = _inline_files(raw, base, where)
        name = item.get("name")
        action = (
            "unchanged"
            if name in snippets and snippets[name] == item.get("value")
            else ("updated" if name in snippets else "created")
        )
        try:
            if action != "unchanged":
                templates.put_snippet(session, workspace_id, item, now=now)
        except TidingsError as exc:
            raise _located(exc, where) from exc
        results.append({"kind": "snippet", "action": action, "id": None, "name": name})
    existing = templates.list_templates(session, workspace_id)
    by_trigger = {row["trigger_name"]: row for row in existing if row["trigger_name"]}
    by_name = {row["name"]: row for row in existing}
    for index, raw in enumerate(_items(document, "messages")):
        where = f"messages[{index}]"
        item = dict(raw)
        if isinstance(item.get("content"), dict):
            item["content"] = _inline_files(item["content"], base, f"{where}.content")
        layout_name = item.pop("layout", None)
        if layout_name is not None:
            if layout_name not in layouts:
                raise InvalidInput(
                    f"{where}.layout: no layout named {layout_name!r}", field=f"{where}.layout"
                )
            item["layout_id"] = layouts[layout_name]["id"]
        current = by_trigger.get(item.get("trigger_name")) or by_name.get(item.get("name"))
        try:
            if current is None:
                view, action = templates.create_template(session, workspace_id, item, now=now), "created"
            elif "languages" in item or any(current.get(key) != value for key, value in item.items()):
                view = templates.update_template(session, workspace_id, current["id"], item, now=now)
                action = "updated"
            else:
                view, action = current, "unchanged"
        except TidingsError as exc:
            raise _located(exc, where) from exc
        results.append({"kind": "message", "action": action, "id": view["id"], "name": view["name"]})
    return results
