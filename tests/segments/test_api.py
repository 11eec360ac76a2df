"""The segments management API (App API): manual and data-driven segments, builds and rebuilds,
membership reads, what uses a segment, bad input and workspace isolation."""

from __future__ import annotations

from typing import Any

from tests.harness import Api
from tests.segments.conftest import (
    Json,
    app_error,
    attribute,
    create_segment,
    get_segment,
    identify,
    members,
    membership_page,
    ok,
    orphan_rows,
    search,
    segment_activities,
    segment_moves,
    segments_of,
    server_now,
    track,
    wait_built,
)

PRO = attribute("plan", "eq", "pro")
TEAM = attribute("plan", "eq", "team")


def test_create_a_manual_segment_in_customerio_shape(api: Api) -> None:
    response = api.app.post(
        "/v1/segments", json={"segment": {"name": "Beta", "description": "hand-picked", "tags": ["b"]}}
    )
    segment = ok(response)["segment"]
    assert segment["type"] == "manual"
    assert segment["state"] == "finished"
    assert segment["name"] == "Beta"
    assert segment["description"] == "hand-picked"
    assert segment["tags"] == ["b"]
    assert "conditions" not in segment
    assert get_segment(api, segment["id"]) == segment


def test_create_a_data_driven_segment_and_watch_it_build(api: Api) -> None:
    conditions = {"and": [PRO, attribute("age", "gte", 18)]}
    response = api.app.post(
        "/v1/segments", json={"segment": {"name": "Adult pros", "conditions": conditions}}
    )
    created = ok(response)["segment"]
    assert created["type"] == "dynamic"
    assert created["state"] in ("build_queued", "build", "finished")
    assert created["conditions"] == conditions
    assert "progress" in created
    built = wait_built(api, created["id"])
    assert built["type"] == "dynamic"
    assert built["conditions"] == conditions
    assert built["progress"] is None
    assert built["name"] == "Adult pros"


def test_the_initial_build_adds_existing_people_without_entry_activities(api: Api) -> None:
    identify(api, "a", plan="pro")
    identify(api, "b", plan="free")
    identify(api, "c", plan="pro", email="c@example.com")
    segment_id = create_segment(api, "Pros", PRO)
    assert members(api, segment_id) == {"a", "c"}
    for person in ("a", "b", "c"):
        assert segment_activities(api, person) == []
    assert api.activities("a", type="entered_segment") == []
    assert segments_of(api, "a") == {segment_id}
    assert segments_of(api, "c@example.com", id_type="email") == {segment_id}
    assert segments_of(api, "b") == set()
    assert ok(api.app.get(f"/v1/segments/{segment_id}/customer_count")) == {"count": 2}


def test_a_build_in_an_empty_workspace_finishes(api: Api) -> None:
    segment_id = create_segment(api, "Nobody yet", PRO)
    assert members(api, segment_id) == set()
    identify(api, "late", plan="pro")
    assert members(api, segment_id) == {"late"}


def test_renaming_keeps_membership_and_does_not_rebuild(api: Api) -> None:
    identify(api, "a", plan="pro")
    segment_id = create_segment(api, "Pros", PRO)
    renamed = ok(api.app.put(f"/v1/segments/{segment_id}", json={"segment": {"name": "Professionals"}}))
    assert renamed["segment"]["name"] == "Professionals"
    assert renamed["segment"]["state"] == "finished"
    assert renamed["segment"]["conditions"] == PRO
    assert get_segment(api, segment_id)["state"] == "finished"
    assert members(api, segment_id) == {"a"}
    # Sending the same conditions again changes nothing either.
    same = api.app.put(f"/v1/segments/{segment_id}", json={"segment": {"conditions": PRO}})
    assert ok(same)["segment"]["state"] == "finished"
    assert segment_activities(api, "a") == []


def test_new_conditions_rebuild_with_entries_and_exits(api: Api) -> None:
    identify(api, "stays", plan="pro", seats=5)
    identify(api, "leaves", plan="pro", seats=1)
    identify(api, "joins", plan="team", seats=5)
    identify(api, "never", plan="free", seats=1)
    segment_id = create_segment(api, "Paying", PRO)
    assert members(api, segment_id) == {"stays", "leaves"}
    updated = ok(
        api.app.put(
            f"/v1/segments/{segment_id}",
            json={"segment": {"conditions": {"and": [{"or": [PRO, TEAM]}, attribute("seats", "gt", 2)]}}},
        )
    )["segment"]
    assert updated["state"] in ("build_queued", "build", "finished")
    wait_built(api, segment_id)
    assert members(api, segment_id) == {"stays", "joins"}
    assert segment_activities(api, "joins") == [("entered_segment", segment_id)]
    assert segment_activities(api, "leaves") == [("exited_segment", segment_id)]
    assert segment_activities(api, "stays") == []
    assert segment_activities(api, "never") == []
    assert sorted(segment_moves(api, segment_id), key=str) == sorted(
        [("joins", True), ("leaves", False)], key=str
    )
    assert [a["data"]["segment_id"] for a in api.activities("joins", type="entered_segment")] == [segment_id]


def test_list_segments(api: Api) -> None:
    manual = create_segment(api, "Manual")
    dynamic = create_segment(api, "Dynamic", PRO)
    listed = ok(api.app.get("/v1/segments"))["segments"]
    assert [s["id"] for s in listed] == [manual, dynamic]
    assert [s["type"] for s in listed] == ["manual", "dynamic"]
    assert listed[1]["conditions"] == PRO
    assert "conditions" not in listed[0]


def test_membership_pages_with_a_cursor(api: Api) -> None:
    for index in range(5):
        identify(api, f"p{index}", plan="pro", email=f"p{index}@example.com")
    ok(api.track.put("/api/v1/customers/noid@example.com", json={"plan": "pro"}))
    identify(api, "free", plan="free")
    segment_id = create_segment(api, "Pros", PRO)
    seen: list[str] = []
    start = ""
    pages = 0
    while True:
        params: dict[str, int | str] = {"limit": 2}
        if start:
            params["start"] = start
        page = membership_page(api, segment_id, **params)
        pages += 1
        assert set(page) == {"identifiers", "ids", "next"}
        assert len(page["ids"]) <= 2
        assert [i["id"] for i in page["identifiers"]] == page["ids"]
        for identifiers in page["identifiers"]:
            assert set(identifiers) == {"id", "email", "cio_id"}
            assert identifiers["cio_id"]
        seen.extend(i["email"] for i in page["identifiers"])
        start = page["next"]
        if not start:
            break
    assert pages == 3
    assert sorted(seen) == sorted([f"p{i}@example.com" for i in range(5)] + ["noid@example.com"])
    everyone = membership_page(api, segment_id)
    assert everyone["next"] == ""
    without_id = [i for i in everyone["identifiers"] if i["email"] == "noid@example.com"]
    assert without_id[0]["id"] == ""
    assert "" in everyone["ids"]
    assert ok(api.app.get(f"/v1/segments/{segment_id}/customer_count")) == {"count": 6}


def test_membership_limit_and_cursor_are_checked(api: Api) -> None:
    segment_id = create_segment(api, "Pros", PRO)
    too_many = api.app.get(f"/v1/segments/{segment_id}/membership", params={"limit": 30001})
    assert "limit" in app_error(too_many, (400, 422))
    zero = api.app.get(f"/v1/segments/{segment_id}/membership", params={"limit": 0})
    app_error(zero, (400, 422))
    assert membership_page(api, segment_id, limit=30000)["ids"] == []
    bad_cursor = api.app.get(f"/v1/segments/{segment_id}/membership", params={"start": "not-a-cursor"})
    app_error(bad_cursor, 400)
    missing = api.app.get("/v1/segments/999999999/membership")
    app_error(missing, 404)


def test_manual_segment_membership_through_track_and_app(api: Api) -> None:
    identify(api, "m1", email="m1@example.com")
    identify(api, "m2")
    manual = create_segment(api, "Hand-picked")
    ok(api.track.post(f"/api/v1/segments/{manual}/add_customers", json={"ids": ["m1", "m2", "ghost"]}))
    assert members(api, manual) == {"m1", "m2"}
    assert segments_of(api, "m1@example.com", id_type="email") == {manual}
    ok(
        api.track.post(
            f"/api/v1/segments/{manual}/remove_customers",
            params={"id_type": "email"},
            json={"ids": ["m1@example.com"]},
        )
    )
    assert members(api, manual) == {"m2"}
    assert ok(api.app.get(f"/v1/segments/{manual}/customer_count")) == {"count": 1}


def test_used_by_and_deleting_a_used_segment(api: Api) -> None:
    base = create_segment(api, "Base", PRO)
    user = create_segment(api, "Uses base", {"and": [{"segment": {"id": base}}, attribute("age", "gt", 3)]})
    campaign = ok(
        api.app.post(
            "/v1/campaigns",
            json={
                "name": "Base drip",
                "trigger": {"type": "event", "event": "e"},
                "steps": [{"id": "b", "type": "branch", "condition": {"segment": {"id": base}}}],
            },
        )
    )["campaign"]["id"]
    assert ok(api.app.get(f"/v1/segments/{base}/used_by")) == {
        "used_by": {
            "segments": [{"id": user, "name": "Uses base"}],
            "campaigns": [{"id": campaign, "name": "Base drip"}],
            "broadcasts": [],
        }
    }
    assert ok(api.app.get(f"/v1/segments/{user}/used_by")) == {
        "used_by": {"segments": [], "campaigns": [], "broadcasts": []}
    }
    refused = api.app.delete(f"/v1/segments/{base}")
    detail = app_error(refused, 409)
    assert "Uses base" in detail
    assert "Base drip" in detail
    assert str(user) in detail
    ok(api.app.post(f"/v1/campaigns/{campaign}/archive"))
    assert get_segment(api, base)["state"] == "finished"
    assert ok(api.app.delete(f"/v1/segments/{user}")) == {}
    app_error(api.app.get(f"/v1/segments/{user}"), 404)
    assert ok(api.app.delete(f"/v1/segments/{base}")) == {}
    app_error(api.app.get(f"/v1/segments/{base}"), 404)
    assert ok(api.app.get("/v1/segments"))["segments"] == []


def test_deleting_an_unused_data_driven_segment_drops_its_membership(api: Api) -> None:
    identify(api, "a", plan="pro")
    segment_id = create_segment(api, "Pros", PRO)
    assert members(api, segment_id) == {"a"}
    assert ok(api.app.delete(f"/v1/segments/{segment_id}")) == {}
    app_error(api.app.get(f"/v1/segments/{segment_id}/membership"), 404)
    assert segments_of(api, "a") == set()
    rows = api.server.sql("SELECT count(*) FROM segment_memberships WHERE segment_id = :s", s=segment_id)
    assert rows[0][0] == 0
    # Later changes of the person no longer touch the deleted segment.
    identify(api, "a", plan="team")
    identify(api, "a", plan="pro")
    assert segments_of(api, "a") == set()


def test_invalid_conditions_name_the_offending_path(api: Api) -> None:
    body = {
        "segment": {
            "name": "Bad",
            "conditions": {"and": [PRO, {"attribute": {"field": "age", "operator": "bigger", "value": 3}}]},
        }
    }
    detail = app_error(api.app.post("/v1/segments", json=body), 400)
    assert "segment.conditions.and[1].attribute.operator" in detail
    cases = [
        ({"or": []}, "segment.conditions.or"),
        ({"attribute": {"operator": "eq", "value": "x"}}, "segment.conditions.attribute.field"),
        (
            {"attribute": {"field": "age", "operator": "gt", "value": "old"}},
            "segment.conditions.attribute.value",
        ),
        ({"event": {"count": {"operator": "at_least", "value": 1}}}, "segment.conditions.event.name"),
        ({"not": {"bogus": {}}}, "segment.conditions.not"),
        ({"event": {"name": "x", "within": {"days": -1}}}, "segment.conditions.event.within.days"),
    ]
    for conditions, path in cases:
        response = api.app.post("/v1/segments", json={"segment": {"name": "Bad", "conditions": conditions}})
        assert path in app_error(response, 400), conditions
    assert ok(api.app.get("/v1/segments"))["segments"] == []


def test_references_to_missing_segments_and_cycles_are_refused(api: Api) -> None:
    missing = api.app.post(
        "/v1/segments", json={"segment": {"name": "Dangling", "conditions": {"segment": {"id": 987654321}}}}
    )
    assert "987654321" in app_error(missing, 400)
    first = create_segment(api, "A", PRO)
    itself = api.app.put(
        f"/v1/segments/{first}", json={"segment": {"conditions": {"or": [PRO, {"segment": {"id": first}}]}}}
    )
    app_error(itself, 400)
    second = create_segment(api, "B", {"segment": {"id": first}})
    cycle = api.app.put(
        f"/v1/segments/{first}", json={"segment": {"conditions": {"segment": {"id": second}}}}
    )
    app_error(cycle, 400)
    assert get_segment(api, first)["conditions"] == PRO
    # A longer cycle through a third segment is refused too.
    third = create_segment(api, "C", {"segment": {"id": second}})
    long_cycle = api.app.put(
        f"/v1/segments/{first}", json={"segment": {"conditions": {"segment": {"id": third}}}}
    )
    app_error(long_cycle, 400)
    assert get_segment(api, first)["conditions"] == PRO


def test_conditions_cannot_be_put_on_a_manual_segment(api: Api) -> None:
    manual = create_segment(api, "Manual")
    response = api.app.put(f"/v1/segments/{manual}", json={"segment": {"conditions": PRO}})
    app_error(response, 400)
    segment = get_segment(api, manual)
    assert segment["type"] == "manual"
    assert "conditions" not in segment
    # A data-driven segment refuses manual membership changes.
    dynamic = create_segment(api, "Dynamic", PRO)
    identify(api, "x", plan="free")
    refused = api.track.post(f"/api/v1/segments/{dynamic}/add_customers", json={"ids": ["x"]})
    assert refused.status_code == 400
    assert members(api, dynamic) == set()


def test_other_workspaces_cannot_see_or_change_a_segment(api: Api, other_api: Api) -> None:
    identify(api, "mine", plan="pro")
    segment_id = create_segment(api, "Pros", PRO)
    identify(other_api, "theirs", plan="pro")
    for response in (
        other_api.app.get(f"/v1/segments/{segment_id}"),
        other_api.app.put(f"/v1/segments/{segment_id}", json={"segment": {"name": "Stolen"}}),
        other_api.app.put(f"/v1/segments/{segment_id}", json={"segment": {"conditions": TEAM}}),
        other_api.app.get(f"/v1/segments/{segment_id}/membership"),
        other_api.app.get(f"/v1/segments/{segment_id}/customer_count"),
        other_api.app.get(f"/v1/segments/{segment_id}/used_by"),
        other_api.app.delete(f"/v1/segments/{segment_id}"),
    ):
        app_error(response, 404)
    assert ok(other_api.app.get("/v1/segments"))["segments"] == []
    # Nor use it in their own conditions.
    borrowed = other_api.app.post(
        "/v1/segments", json={"segment": {"name": "Borrow", "conditions": {"segment": {"id": segment_id}}}}
    )
    app_error(borrowed, 400)
    assert segments_of(other_api, "theirs") == set()
    segment = get_segment(api, segment_id)
    assert segment["name"] == "Pros"
    assert segment["conditions"] == PRO
    assert members(api, segment_id) == {"mine"}


def test_real_time_writes_during_a_build_leave_it_exact(api: Api) -> None:
    """A build runs in steps (25 people keys each here) while identifies change the very attribute the
    segment tests, in people the build has reached and people it has not: when it finishes, the
    membership equals a from-scratch evaluation, and the segment stayed exact afterwards."""
    for index in range(120):
        identify(api, f"p{index}", plan="pro" if index % 3 == 0 else "free")
    segment_id = create_segment(api, "pros while building", PRO, wait=False)
    flipped = 0
    while get_segment(api, segment_id)["state"] != "finished" or flipped < 40:
        index = (flipped * 7) % 120
        identify(api, f"p{index}", plan="free" if flipped % 2 else "pro")
        flipped += 1
        if flipped > 2000:
            raise AssertionError("the build did not finish")
    assert members(api, segment_id) == search(api, PRO)
    identify(api, "p1", plan="pro")
    identify(api, "p0", plan="team")
    assert members(api, segment_id) == search(api, PRO)


def test_people_deleted_during_a_build_leave_nothing_behind(api: Api) -> None:
    """Deletes land between and during the steps of a build (whose parts are matched outside the step's
    transaction): when it finishes, no membership or timer names a deleted person, and the count is the
    members'."""
    recent = {"and": [PRO, {"event": {"name": "purchase", "within": {"days": 3}}}]}
    for index in range(150):
        identify(api, f"d{index}", plan="pro")
        track(api, f"d{index}", "purchase")
    segment_id = create_segment(api, "pros buying while deleting", recent, wait=False)
    deleted = 0
    while get_segment(api, segment_id)["state"] != "finished" or deleted < 30:
        ok(api.track.delete(f"/api/v1/customers/d{(deleted * 7) % 150}"))
        deleted += 1
        if deleted > 150:
            raise AssertionError("the build did not finish")
    found = members(api, segment_id)
    assert found == search(api, recent)
    assert ok(api.app.get(f"/v1/segments/{segment_id}/customer_count")) == {"count": len(found)}
    assert orphan_rows(api) == 0


def purchases(count: Json, **extra: Any) -> Json:
    return {"event": {"name": "purchase", "count": count, **extra}}


def test_a_build_counts_events_as_a_search_does(api: Api) -> None:
    """A build counts a part of the people range's events of one name at once, grouped by person (with
    steps of 25 keys in parts of 5 here, the worker's helper connection matches parts while the step's
    own transaction matches and writes others); a search probes person by person. Every count operator,
    a window, a property filter, the inverse and a combination with an attribute agree."""
    now = server_now(api)
    for index in range(40):
        person = f"c{index}"
        identify(api, person, plan="pro" if index % 2 else "free")
        # 0 to 4 purchases, 1, 21, 41 and 61 hours ago: the fourth lies outside a two-day window.
        for number in range(index % 5):
            stamp = now - (1 + 20 * number) * 3600
            track(api, person, "purchase", timestamp=stamp, data={"price": 10 * number})
        if index % 3 == 0:
            track(api, person, "refund", timestamp=now - 3600)
        # A rare event, absent from the first parts: on PostgreSQL such a build fetches by key only the
        # people who have it (tidings.segments.realtime.drives).
        if index % 6 == 5 and index > 10:
            track(api, person, "gift", timestamp=now - 3600)
    # (condition, how many of the 40 match: 8 people have each number of purchases, half of them pro)
    expected_sizes = [
        (purchases({"operator": "at_least", "value": 3}), 16),
        (purchases({"operator": "at_most", "value": 1}), 16),
        (purchases({"operator": "exactly", "value": 2}), 8),
        (purchases({"operator": "exactly", "value": 0}), 8),
        (purchases({"operator": "at_least", "value": 2}, within={"days": 1}), 24),
        (purchases({"operator": "at_least", "value": 1}, within={"days": 1}, inverse=True), 8),
        (
            purchases(
                {"operator": "at_least", "value": 2},
                filters=[{"field": "price", "operator": "gt", "value": 5}],
            ),
            16,
        ),
        ({"and": [PRO, purchases({"operator": "at_most", "value": 2}, within={"days": 2})]}, 12),
        ({"event": {"name": "gift"}}, 5),
        (
            {
                "and": [
                    {"event": {"name": "gift", "within": {"days": 1}}},
                    PRO,
                    purchases({"operator": "at_least", "value": 2}),
                ]
            },
            3,
        ),
    ]
    built = [
        (create_segment(api, f"counts {index}", condition), condition, size)
        for index, (condition, size) in enumerate(expected_sizes)
    ]
    for segment_id, condition, size in built:
        found = members(api, segment_id)
        assert found == search(api, condition), condition
        assert len(found) == size, condition
