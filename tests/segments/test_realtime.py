"""Real-time membership: every kind of change re-evaluates the segments it can affect in the same
transaction, so membership is current as soon as the change's 200 arrives; time windows move people
through the worker's timers."""

from __future__ import annotations

from typing import Any

from tests.harness import Api
from tests.segments.conftest import (
    DAY,
    Json,
    advance,
    attribute,
    create_segment,
    identify,
    members,
    ok,
    orphan_rows,
    segment_activities,
    segment_moves,
    segments_of,
    server_now,
    track,
    wait_until,
)

PRO = attribute("plan", "eq", "pro")


def entity(api: Api, body: Json) -> None:
    ok(api.track.post("/api/v2/entity", json=body))


def obj_identify(api: Api, type_id: str, object_id: str, **extra: Any) -> None:
    identifiers = {"object_type_id": type_id, "object_id": object_id}
    entity(api, {"type": "object", "identifiers": identifiers, "action": "identify", **extra})


def test_identify_enters_and_exits_immediately(api: Api) -> None:
    identify(api, "ana", plan="free")
    segment_id = create_segment(api, "Pros", PRO)
    assert members(api, segment_id) == set()
    identify(api, "ana", plan="pro")
    assert members(api, segment_id) == {"ana"}
    assert segments_of(api, "ana") == {segment_id}
    identify(api, "ana", city="Oslo")
    assert members(api, segment_id) == {"ana"}
    identify(api, "ana", plan="team")
    assert members(api, segment_id) == set()
    identify(api, "ana", plan="pro")
    identify(api, "ana", plan=None)
    assert members(api, segment_id) == set()
    expected = [("entered_segment", segment_id), ("exited_segment", segment_id)] * 2
    assert segment_activities(api, "ana") == expected
    assert segment_moves(api, segment_id) == [("ana", True), ("ana", False)] * 2
    [entered, _] = api.activities("ana", type="entered_segment")
    assert entered["data"]["segment_id"] == segment_id


def test_a_new_person_without_the_attribute_enters(api: Api) -> None:
    no_plan = create_segment(api, "No plan", attribute("plan", "exists", inverse=True))
    not_pro = create_segment(api, "Not pro", {"not": PRO})
    identify(api, "newbie", email="newbie@example.com")
    assert members(api, no_plan) == {"newbie"}
    assert members(api, not_pro) == {"newbie"}
    identify(api, "newbie", plan="pro")
    assert members(api, no_plan) == set()
    assert members(api, not_pro) == set()
    # A person first seen through an event is new too.
    track(api, "eventful", "signup")
    assert members(api, no_plan) == {"eventful"}
    assert segment_moves(api, no_plan) == [("newbie", True), ("newbie", False), ("eventful", True)]


def test_a_new_person_enters_segments_built_on_segments_they_miss(api: Api) -> None:
    """A new person is in no segment yet: one whose attributes or first event keep them out of a segment an
    empty person would be in must still enter the segments that negate it."""
    no_plan = create_segment(api, "No plan", attribute("plan", "exists", inverse=True))
    has_plan = create_segment(api, "Not in No plan", {"not": {"segment": {"id": no_plan}}})
    never_bought = create_segment(api, "Never bought", {"event": {"name": "purchase", "inverse": True}})
    bought = create_segment(api, "Not in Never bought", {"segment": {"id": never_bought, "inverse": True}})
    identify(api, "fresh", plan="free")
    assert members(api, no_plan) == set()
    assert members(api, has_plan) == {"fresh"}
    assert members(api, never_bought) == {"fresh"}
    track(api, "first-seen-buying", "purchase")
    assert members(api, never_bought) == {"fresh"}
    assert members(api, bought) == {"first-seen-buying"}
    assert members(api, no_plan) == {"first-seen-buying"}
    assert members(api, has_plan) == {"fresh"}


def test_events_count_towards_segments(api: Api) -> None:
    twice = create_segment(
        api, "Bought twice", {"event": {"name": "purchase", "count": {"operator": "at_least", "value": 2}}}
    )
    big = create_segment(
        api,
        "Big spender",
        {"event": {"name": "purchase", "filters": [{"field": "price", "operator": "gt", "value": 100}]}},
    )
    never = create_segment(api, "Never refunded", {"event": {"name": "refund", "inverse": True}})
    identify(api, "buyer")
    assert members(api, never) == {"buyer"}
    track(api, "buyer", "purchase", data={"price": 20})
    assert members(api, twice) == set()
    assert members(api, big) == set()
    track(api, "buyer", "purchase", data={"price": 250})
    assert members(api, twice) == {"buyer"}
    assert members(api, big) == {"buyer"}
    track(api, "buyer", "refund")
    assert members(api, never) == set()
    assert segment_activities(api, "buyer") == [
        ("entered_segment", never),
        ("entered_segment", twice),
        ("entered_segment", big),
        ("exited_segment", never),
    ]


def test_page_and_screen_views(api: Api) -> None:
    pricing = create_segment(
        api, "Saw pricing", {"page": {"name": {"operator": "contains", "value": "/pricing"}}}
    )
    settings = create_segment(api, "Opened settings", {"screen": {"name": "Settings"}})
    # An event named like the page is not a page view.
    track(api, "visitor", "https://x.test/pricing")
    assert members(api, pricing) == set()
    track(api, "visitor", "https://x.test/pricing?plan=pro", type="page")
    assert members(api, pricing) == {"visitor"}
    assert members(api, settings) == set()
    track(api, "visitor", "Settings", type="screen")
    assert members(api, settings) == {"visitor"}


def test_devices_added_and_deleted(api: Api) -> None:
    ios = create_segment(api, "iOS", {"device": {"platform": "ios"}})
    any_device = create_segment(api, "Has a device", {"device": {}})
    identify(api, "phone")
    ok(
        api.track.put(
            "/api/v1/customers/phone/devices", json={"device": {"id": "tok-a", "platform": "android"}}
        )
    )
    assert members(api, ios) == set()
    assert members(api, any_device) == {"phone"}
    ok(api.track.put("/api/v1/customers/phone/devices", json={"device": {"id": "tok-i", "platform": "ios"}}))
    assert members(api, ios) == {"phone"}
    ok(api.track.delete("/api/v1/customers/phone/devices/tok-i"))
    assert members(api, ios) == set()
    assert members(api, any_device) == {"phone"}
    ok(api.track.delete("/api/v1/customers/phone/devices/tok-a"))
    assert members(api, any_device) == set()


def test_relationships_and_object_attribute_changes(api: Api) -> None:
    account = create_segment(api, "In an account", {"object": {"type_id": "1"}})
    enterprise = create_segment(
        api,
        "Enterprise accounts",
        {"object": {"type_id": "1", "filters": [{"field": "tier", "operator": "eq", "value": "enterprise"}]}},
    )
    admins = create_segment(
        api,
        "Account admins",
        {
            "object": {
                "type_id": "1",
                "relationship_filters": [{"field": "role", "operator": "eq", "value": "admin"}],
            }
        },
    )
    acme = {"object_type_id": "1", "object_id": "acme"}
    obj_identify(api, "1", "acme", attributes={"tier": "startup"})
    identify(api, "r1")
    identify(api, "r2")
    # Track v1: relationships on identify.
    ok(
        api.track.put(
            "/api/v1/customers/r1",
            json={
                "cio_relationships": {
                    "action": "add_relationships",
                    "relationships": [{"identifiers": acme, "relationship_attributes": {"role": "admin"}}],
                }
            },
        )
    )
    assert members(api, account) == {"r1"}
    assert members(api, admins) == {"r1"}
    # Track v2: a person's add_relationships.
    entity(
        api,
        {
            "type": "person",
            "identifiers": {"id": "r2"},
            "action": "add_relationships",
            "cio_relationships": [{"identifiers": acme, "relationship_attributes": {"role": "member"}}],
        },
    )
    assert members(api, account) == {"r1", "r2"}
    assert members(api, admins) == {"r1"}
    assert members(api, enterprise) == set()
    # An object's attribute change moves everyone related to it.
    obj_identify(api, "1", "acme", attributes={"tier": "enterprise"})
    assert members(api, enterprise) == {"r1", "r2"}
    obj_identify(api, "1", "acme", attributes={"tier": "startup"})
    assert members(api, enterprise) == set()
    obj_identify(api, "1", "acme", attributes={"tier": "enterprise"})
    # An object of another type does not count.
    obj_identify(api, "2", "acme", attributes={"tier": "enterprise"})
    entity(
        api,
        {
            "type": "person",
            "identifiers": {"id": "r2"},
            "action": "delete_relationships",
            "cio_relationships": [{"identifiers": acme}],
        },
    )
    assert members(api, account) == {"r1"}
    assert members(api, enterprise) == {"r1"}
    assert segment_activities(api, "r2") == [
        ("entered_segment", account),
        ("entered_segment", enterprise),
        ("exited_segment", enterprise),
        ("entered_segment", enterprise),
        ("exited_segment", account),
        ("exited_segment", enterprise),
    ]
    # Deleting the object takes everyone related out.
    entity(api, {"type": "object", "identifiers": acme, "action": "delete"})
    assert members(api, account) == set()
    assert members(api, admins) == set()
    assert members(api, enterprise) == set()


def test_deleting_a_person_takes_them_out(api: Api) -> None:
    segment_id = create_segment(api, "Pros", PRO)
    recent = create_segment(api, "Bought lately", {"event": {"name": "purchase", "within": {"days": 3}}})
    picked = create_segment(api, "Hand-picked")
    identify(api, "gone", plan="pro")
    identify(api, "kept", plan="pro")
    for person in ("gone", "kept"):
        track(api, person, "purchase")
    ok(api.track.post(f"/api/v1/segments/{picked}/add_customers", json={"ids": ["gone", "kept"]}))
    assert members(api, segment_id) == members(api, recent) == members(api, picked) == {"gone", "kept"}
    ok(api.track.delete("/api/v1/customers/gone"))
    assert members(api, segment_id) == members(api, recent) == members(api, picked) == {"kept"}
    for each in (segment_id, recent, picked):
        assert ok(api.app.get(f"/v1/segments/{each}/customer_count")) == {"count": 1}
    # Their memberships and their window timer went with them.
    assert orphan_rows(api) == 0
    # Their activity log went with them; the other member's entry stays.
    assert segment_moves(api, segment_id) == [("kept", True)]
    # A person with the same id later is a new person, evaluated afresh.
    identify(api, "gone", plan="free")
    assert members(api, segment_id) == {"kept"}


def test_suppressing_a_person_takes_them_out(api: Api) -> None:
    segment_id = create_segment(api, "Pros", PRO)
    identify(api, "sup", plan="pro", email="sup@example.com")
    assert members(api, segment_id) == {"sup"}
    ok(api.track.post("/api/v1/customers/sup/suppress"))
    assert members(api, segment_id) == set()
    assert segment_moves(api, segment_id) == []
    assert orphan_rows(api) == 0


def test_merge_re_evaluates_the_primary(api: Api) -> None:
    oslo = create_segment(api, "Oslo", attribute("city", "eq", "Oslo"))
    pro_in_oslo = create_segment(api, "Pros in Oslo", {"and": [PRO, attribute("city", "eq", "Oslo")]})
    buyers = create_segment(
        api, "Bought twice", {"event": {"name": "purchase", "count": {"operator": "at_least", "value": 2}}}
    )
    manual = create_segment(api, "Hand-picked")
    picked_pros = create_segment(api, "Picked pros", {"and": [{"segment": {"id": manual}}, PRO]})
    identify(api, "primary", plan="pro")
    identify(api, "secondary", city="Oslo", email="secondary@example.com")
    track(api, "primary", "purchase")
    track(api, "secondary", "purchase")
    ok(api.track.post(f"/api/v1/segments/{manual}/add_customers", json={"ids": ["secondary"]}))
    assert members(api, oslo) == {"secondary"}
    assert members(api, buyers) == set()
    assert members(api, picked_pros) == set()
    ok(
        api.track.post(
            "/api/v1/merge_customers",
            json={"primary": {"id": "primary"}, "secondary": {"email": "secondary@example.com"}},
        )
    )
    assert members(api, oslo) == {"primary"}
    assert members(api, pro_in_oslo) == {"primary"}
    assert members(api, buyers) == {"primary"}
    assert members(api, manual) == {"primary"}
    assert members(api, picked_pros) == {"primary"}
    assert segments_of(api, "primary") == {oslo, pro_in_oslo, buyers, manual, picked_pros}
    # The secondary's log moved to the primary (with its entry into Oslo, made before the merge); the
    # secondary's exit at the merge is not recorded, the primary's entry is.
    assert segment_moves(api, oslo) == [("primary", True), ("primary", True)]
    assert orphan_rows(api) == 0


def test_manual_segment_changes_cascade_into_data_driven_ones(api: Api) -> None:
    manual = create_segment(api, "Hand-picked")
    picked_pros = create_segment(api, "Picked pros", {"and": [{"segment": {"id": manual}}, PRO]})
    not_picked = create_segment(api, "Not picked", {"segment": {"id": manual, "inverse": True}})
    identify(api, "p", plan="pro")
    identify(api, "f", plan="free")
    assert members(api, not_picked) == {"p", "f"}
    ok(api.track.post(f"/api/v1/segments/{manual}/add_customers", json={"ids": ["p", "f"]}))
    assert members(api, picked_pros) == {"p"}
    assert members(api, not_picked) == set()
    ok(api.track.post(f"/api/v1/segments/{manual}/remove_customers", json={"ids": ["p"]}))
    assert members(api, picked_pros) == set()
    assert members(api, not_picked) == {"p"}
    assert segment_activities(api, "p") == [
        ("entered_segment", not_picked),
        ("entered_segment", manual),
        ("entered_segment", picked_pros),
        ("exited_segment", not_picked),
        ("exited_segment", manual),
        ("exited_segment", picked_pros),
        ("entered_segment", not_picked),
    ]


def test_a_chain_of_segments_follows_one_identify(api: Api) -> None:
    first = create_segment(api, "A: pros", PRO)
    second = create_segment(
        api, "B: adult A", {"and": [{"segment": {"id": first}}, attribute("age", "gte", 18)]}
    )
    third = create_segment(
        api, "C: B but not vip", {"and": [{"segment": {"id": second}}, {"not": attribute("vip", "is_true")}]}
    )
    identify(api, "chain", age=30, vip=False)
    assert segments_of(api, "chain") == set()
    identify(api, "chain", plan="pro")
    assert segments_of(api, "chain") == {first, second, third}
    identify(api, "chain", vip=True)
    assert segments_of(api, "chain") == {first, second}
    identify(api, "chain", vip=False, plan="free")
    assert segments_of(api, "chain") == set()
    assert segment_activities(api, "chain") == [
        ("entered_segment", first),
        ("entered_segment", second),
        ("entered_segment", third),
        ("exited_segment", third),
        ("exited_segment", first),
        ("exited_segment", second),
    ]
    for segment_id in (first, second):
        assert segment_moves(api, segment_id) == [("chain", True), ("chain", False)]


def test_an_event_window_closes_through_the_worker(api: Api) -> None:
    recent = create_segment(api, "Bought this day", {"event": {"name": "purchase", "within": {"days": 1}}})
    track(api, "window", "purchase")
    assert members(api, recent) == {"window"}
    advance(api, 2 * DAY)
    wait_until(lambda: members(api, recent) == set(), "the purchase window to close")
    assert segment_activities(api, "window") == [("entered_segment", recent), ("exited_segment", recent)]
    assert segment_moves(api, recent) == [("window", True), ("window", False)]
    # A new purchase brings the person back at once.
    track(api, "window", "purchase")
    assert members(api, recent) == {"window"}


def test_a_relative_date_attribute_moves_people_in_and_out(api: Api) -> None:
    ending = create_segment(api, "Trial ends soon", attribute("trial_ends", "within_next", days=3))
    now = server_now(api)
    identify(api, "trial", trial_ends=now + 5 * DAY)
    assert members(api, ending) == set()
    advance(api, 2.5 * DAY)
    wait_until(lambda: members(api, ending) == {"trial"}, "the trial to come within three days")
    advance(api, 3 * DAY)
    wait_until(lambda: members(api, ending) == set(), "the trial end to pass")
    assert segment_activities(api, "trial") == [("entered_segment", ending), ("exited_segment", ending)]


def test_the_pipelines_api_updates_membership(api: Api) -> None:
    pros = create_segment(api, "Pros", PRO)
    buyers = create_segment(api, "Buyers", {"event": {"name": "purchase"}})
    pricing = create_segment(api, "Saw pricing", {"page": {"name": "Pricing"}})
    strict = {"X-Strict-Mode": "1"}

    def send(call: str, body: Json) -> None:
        ok(api.pipelines.post(f"/v1/{call}", json=body, headers=strict))

    send("identify", {"userId": "pipe", "traits": {"plan": "pro"}})
    assert members(api, pros) == {"pipe"}
    send("track", {"userId": "pipe", "event": "purchase", "properties": {"price": 3}})
    assert members(api, buyers) == {"pipe"}
    send("page", {"userId": "pipe", "name": "Pricing"})
    assert members(api, pricing) == {"pipe"}
    send("identify", {"userId": "pipe", "traits": {"plan": "free"}})
    assert members(api, pros) == set()
