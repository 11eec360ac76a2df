"""``tidings segments apply`` and ``tidings segments list``: segment definitions kept in files, applied
to a workspace by name, all of a file or none of it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.harness import TIDINGS, run_cli
from tidings.db import Database
from tidings.models import Job, Segment

PRO = {"attribute": {"field": "plan", "operator": "eq", "value": "pro"}}
ENTERPRISE = {"attribute": {"field": "plan", "operator": "eq", "value": "enterprise"}}

TWO_SEGMENTS = """\
# Kept in version control, applied on deploy.
- name: Pro customers
  description: Everyone on the pro plan
  tags: [billing]
  conditions:
    attribute: {field: plan, operator: eq, value: pro}
- name: Beta testers   # no conditions: a manual segment
"""


@pytest.fixture
def workspace(database_url: str) -> dict[str, Any]:
    created: dict[str, Any] = json.loads(
        run_cli(database_url, "workspace", "create", "Acme", "--json").stdout
    )
    return created


def apply(database_url: str, workspace_ref: str, file: Path | str) -> list[dict[str, Any]]:
    result = run_cli(database_url, "segments", "apply", str(file), "--workspace", workspace_ref, "--json")
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def apply_stdin(database_url: str, workspace_ref: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TIDINGS), "segments", "apply", "-", "--workspace", workspace_ref],
        input=text,
        env={**os.environ, "TIDINGS_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def listed(database_url: str, workspace_ref: str) -> list[dict[str, Any]]:
    result = run_cli(database_url, "segments", "list", "--workspace", workspace_ref, "--json")
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def build_jobs(database_url: str, segment_id: int) -> list[dict[str, Any]]:
    db = Database(database_url)
    try:
        with db.read_session() as session:
            payloads = session.scalars(select(Job.payload).where(Job.kind == "segments.build")).all()
    finally:
        db.close()
    return [p for p in payloads if p["segment_id"] == segment_id]


def finish_builds(database_url: str) -> None:
    """Stand in for the worker: mark every build done."""
    db = Database(database_url)
    try:
        with db.session() as session:
            session.execute(update(Segment).values(state="finished", progress=None))
    finally:
        db.close()


def test_apply_creates_then_leaves_unchanged_then_updates(
    database_url: str, workspace: dict[str, Any], tmp_path: Path
) -> None:
    ref = str(workspace["workspace_id"])
    file = tmp_path / "segments.yaml"
    file.write_text(TWO_SEGMENTS)

    created = apply(database_url, ref, file)
    assert [(r["action"], r["name"], r["type"], r["state"]) for r in created] == [
        ("created", "Pro customers", "dynamic", "build_queued"),
        ("created", "Beta testers", "manual", "finished"),
    ]
    pro_id, beta_id = created[0]["id"], created[1]["id"]
    assert len(build_jobs(database_url, pro_id)) == 1

    finish_builds(database_url)
    again = apply(database_url, ref, file)
    assert [(r["action"], r["id"], r["state"]) for r in again] == [
        ("unchanged", pro_id, "finished"),
        ("unchanged", beta_id, "finished"),
    ]
    assert len(build_jobs(database_url, pro_id)) == 1, "an unchanged segment is not rebuilt"

    file.write_text(TWO_SEGMENTS.replace("value: pro}", "value: enterprise}"))
    changed = apply(database_url, ref, file)
    assert [(r["action"], r["id"], r["state"]) for r in changed] == [
        ("updated", pro_id, "build_queued"),
        ("unchanged", beta_id, "finished"),
    ]
    jobs = build_jobs(database_url, pro_id)
    assert len(jobs) == 2
    assert max(job["generation"] for job in jobs) == 2

    segments = {row["id"]: row for row in listed(database_url, ref)}
    assert segments[pro_id]["conditions"] == ENTERPRISE
    assert segments[pro_id]["description"] == "Everyone on the pro plan"
    assert segments[pro_id]["tags"] == ["billing"]
    assert segments[beta_id]["type"] == "manual"
    assert "conditions" not in segments[beta_id]


def test_description_and_tags_changes_update_without_a_rebuild(
    database_url: str, workspace: dict[str, Any], tmp_path: Path
) -> None:
    ref = str(workspace["workspace_id"])
    file = tmp_path / "pro.json"
    file.write_text(json.dumps({"name": "Pro", "conditions": PRO}))
    (created,) = apply(database_url, ref, file)
    finish_builds(database_url)
    file.write_text(json.dumps({"name": "Pro", "description": "paying", "tags": ["a"], "conditions": PRO}))
    (updated,) = apply(database_url, ref, file)
    assert (updated["action"], updated["id"], updated["state"]) == ("updated", created["id"], "finished")
    assert len(build_jobs(database_url, created["id"])) == 1
    # Keys the file leaves out keep what is stored.
    file.write_text(json.dumps({"name": "Pro"}))
    (same,) = apply(database_url, ref, file)
    assert same["action"] == "unchanged"
    (row,) = listed(database_url, ref)
    assert (row["description"], row["tags"], row["conditions"]) == ("paying", ["a"], PRO)


def test_json_file_with_a_list_and_workspace_by_name_and_site_id(
    database_url: str, workspace: dict[str, Any], tmp_path: Path
) -> None:
    file = tmp_path / "segments.json"
    file.write_text(
        json.dumps(
            [
                {"name": "Pro", "conditions": PRO},
                {"name": "Pro or enterprise", "conditions": {"or": [PRO, ENTERPRISE]}},
            ]
        )
    )
    rows = apply(database_url, "Acme", file)
    assert [(r["action"], r["type"]) for r in rows] == [("created", "dynamic"), ("created", "dynamic")]
    by_site = listed(database_url, workspace["site_id"])
    assert [(r["name"], r["type"], r["state"], r["members"]) for r in by_site] == [
        ("Pro", "dynamic", "build_queued", 0),
        ("Pro or enterprise", "dynamic", "build_queued", 0),
    ]
    assert by_site[1]["conditions"] == {"or": [PRO, ENTERPRISE]}


def test_stdin_reads_yaml_or_json_and_prints_one_line_per_segment(
    database_url: str, workspace: dict[str, Any]
) -> None:
    ref = str(workspace["workspace_id"])
    result = apply_stdin(database_url, ref, TWO_SEGMENTS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "created"
    assert "build_queued" in lines[0]
    assert lines[0].endswith("Pro customers")
    assert lines[1].split()[0] == "created"
    assert "finished" in lines[1]
    assert lines[1].endswith("Beta testers")
    as_json = apply_stdin(database_url, ref, json.dumps({"name": "Beta testers"}))
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout.split()[0] == "unchanged"


def test_yaml_dates_stay_strings(database_url: str, workspace: dict[str, Any], tmp_path: Path) -> None:
    ref = str(workspace["workspace_id"])
    file = tmp_path / "launch.yml"
    file.write_text(
        "name: Launch day\nconditions:\n  attribute: {field: signup_day, operator: eq, value: 2024-01-01}\n"
    )
    apply(database_url, ref, file)
    (row,) = listed(database_url, ref)
    assert row["conditions"]["attribute"]["value"] == "2024-01-01"


def test_list_shows_members_in_a_table(database_url: str, workspace: dict[str, Any], tmp_path: Path) -> None:
    ref = str(workspace["workspace_id"])
    empty = run_cli(database_url, "segments", "list", "--workspace", ref, "--json")
    assert json.loads(empty.stdout) == []
    file = tmp_path / "s.yaml"
    file.write_text(TWO_SEGMENTS)
    apply(database_url, ref, file)
    table = run_cli(database_url, "segments", "list", "--workspace", ref).stdout
    assert "Pro customers" in table
    assert "dynamic" in table
    assert "build_queued (0%)" in table
    assert "Beta testers" in table
    assert "manual" in table


def failure(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(database_url, "segments", *args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result


def test_an_invalid_condition_names_its_path_and_applies_nothing(
    database_url: str, workspace: dict[str, Any], tmp_path: Path
) -> None:
    ref = str(workspace["workspace_id"])
    good = tmp_path / "good.yaml"
    good.write_text("- name: Pro\n  conditions: {attribute: {field: plan, operator: eq, value: pro}}\n")
    (existing,) = apply(database_url, ref, good)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- name: Pro\n"
        "  conditions: {attribute: {field: plan, operator: eq, value: enterprise}}\n"
        "- name: New one\n"
        "- name: Broken\n"
        "  conditions:\n"
        "    and:\n"
        "      - attribute: {field: plan, operator: equals, value: pro}\n"
    )
    result = failure(database_url, "apply", str(bad), "--workspace", ref)
    assert "segments[2].conditions.and[0].attribute.operator must be one of" in result.stderr
    (row,) = listed(database_url, ref)
    assert (row["id"], row["conditions"]) == (existing["id"], PRO)
    assert len(build_jobs(database_url, existing["id"])) == 1

    single = tmp_path / "single.json"
    single.write_text(json.dumps({"name": "Single", "conditions": {"event": {"count": {"value": 2}}}}))
    result = failure(database_url, "apply", str(single), "--workspace", ref)
    assert "segment.conditions.event.name is required" in result.stderr
    assert [r["name"] for r in listed(database_url, ref)] == ["Pro"]


def test_errors_the_service_finds_name_the_item(
    database_url: str, workspace: dict[str, Any], tmp_path: Path
) -> None:
    ref = str(workspace["workspace_id"])
    file = tmp_path / "s.yaml"
    file.write_text("- name: Manual\n- name: Uses a missing segment\n  conditions: {segment: {id: 999999}}\n")
    result = failure(database_url, "apply", str(file), "--workspace", ref)
    assert "segments[1].conditions: segment 999999 does not exist" in result.stderr
    assert listed(database_url, ref) == []

    file.write_text("- name: Manual\n")
    (manual,) = apply(database_url, ref, file)
    file.write_text(f"- name: Manual\n  conditions: {json.dumps(PRO)}\n")
    result = failure(database_url, "apply", str(file), "--workspace", ref)
    assert (
        f"segments[0]: segment {manual['id']} is a manual segment; it cannot take conditions" in result.stderr
    )


BAD_FILES = [
    ("bad.yaml", "- name: [unclosed\n", "is not valid YAML"),
    ("bad.json", '{"name": "x",}', "is not valid JSON"),
    ("scalar.yaml", "just text\n", "must hold a segment"),
    ("item.yaml", "- just text\n", "segments[0] must be an object"),
    ("typo.yaml", "- name: x\n  condition: {}\n", "segments[0]: unknown key 'condition'"),
    ("noname.yaml", "- description: x\n", "segments[0].name must be a non-empty string"),
    ("twice.yaml", "- name: x\n- name: x\n", "segments[1].name: 'x' is also the name of segments[0]"),
]


def test_bad_files_are_refused(database_url: str, workspace: dict[str, Any], tmp_path: Path) -> None:
    ref = str(workspace["workspace_id"])
    for name, content, message in BAD_FILES:
        file = tmp_path / name
        file.write_text(content)
        result = failure(database_url, "apply", str(file), "--workspace", ref)
        assert message in result.stderr, name
    assert listed(database_url, ref) == []


def test_unknown_workspace_or_file(database_url: str, workspace: dict[str, Any], tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(TWO_SEGMENTS)
    result = failure(database_url, "apply", str(file), "--workspace", "no-such-workspace")
    assert "no workspace 'no-such-workspace'" in result.stderr
    result = failure(database_url, "list", "--workspace", "no-such-workspace")
    assert "no workspace 'no-such-workspace'" in result.stderr
    result = failure(
        database_url, "apply", str(tmp_path / "missing.yaml"), "--workspace", str(workspace["workspace_id"])
    )
    assert "cannot read" in result.stderr
