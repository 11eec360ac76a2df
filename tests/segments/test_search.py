"""Customer search (``POST /v1/customers``): Customer.io's filter grammar, Tidings' richer conditions,
pagination, bad input and workspace isolation."""

from __future__ import annotations

from tests.harness import Api
from tests.segments.conftest import (
    Json,
    app_error,
    attribute,
    create_segment,
    identify,
    ok,
    search,
    track,
)

PRO = attribute("plan", "eq", "pro")


def people(api: Api) -> None:
    identify(api, "a", plan="pro", email="a@example.com", seats=12, vip=True, city="Oslo")
    identify(api, "b", plan="free", email="b@example.com", seats="3", vip=False, city="Bergen")
    identify(api, "c", seats=7.5, city="Oslo Sentrum")


def test_customerio_grammar(api: Api) -> None:
    people(api)
    manual = create_segment(api, "Picked")
    ok(api.track.post(f"/api/v1/segments/{manual}/add_customers", json={"ids": ["b", "c"]}))
    assert search(api, PRO) == {"a"}
    assert search(api, attribute("plan", "eq", "pro", inverse=True)) == {"b", "c"}
    assert search(api, attribute("plan", "exists")) == {"a", "b"}
    assert search(api, attribute("plan", "exists", inverse=True)) == {"c"}
    assert search(api, {"segment": {"id": manual}}) == {"b", "c"}
    assert search(api, {"segment": {"id": manual, "inverse": True}}) == {"a"}
    assert search(api, {"and": [{"segment": {"id": manual}}, attribute("plan", "exists")]}) == {"b"}
    assert search(api, {"or": [PRO, attribute("plan", "eq", "free")]}) == {"a", "b"}
    assert search(api, {"not": {"or": [PRO, attribute("plan", "eq", "free")]}}) == {"c"}
    assert search(api, {"not": PRO}) == {"b", "c"}
    assert search(api, {"and": [{"not": PRO}, {"not": {"segment": {"id": manual}}}]}) == set()
    assert search(api, attribute("email", "eq", "a@example.com")) == {"a"}
    assert search(api, attribute("id", "eq", "b")) == {"b"}
    assert search(api, attribute("email", "exists", inverse=True)) == {"c"}
    # Numbers in conditions compare with the attribute's text as sent.
    assert search(api, attribute("seats", "eq", 12)) == {"a"}
    assert search(api, attribute("seats", "eq", "3")) == {"b"}


def test_richer_attribute_operators(api: Api) -> None:
    people(api)
    assert search(api, attribute("city", "contains", "Oslo")) == {"a", "c"}
    assert search(api, attribute("city", "contains", "oslo")) == set()
    assert search(api, attribute("city", "starts_with", "Ber")) == {"b"}
    assert search(api, attribute("city", "ends_with", "Sentrum")) == {"c"}
    assert search(api, attribute("seats", "gt", 7)) == {"a", "c"}
    assert search(api, attribute("seats", "gte", 12)) == {"a"}
    assert search(api, attribute("seats", "lt", "7.5")) == {"b"}
    assert search(api, attribute("seats", "lte", 7.5)) == {"b", "c"}
    assert search(api, attribute("seats", "between", values=[3, 7.5])) == {"b", "c"}
    assert search(api, attribute("plan", "in", values=["pro", "team"])) == {"a"}
    assert search(api, attribute("vip", "is_true")) == {"a"}
    assert search(api, attribute("vip", "is_false")) == {"b"}
    assert search(api, attribute("seats", "gt", 7, inverse=True)) == {"b"}
    # A text that is not a number never passes a number test (and passes its inverse).
    identify(api, "d", seats="many")
    assert "d" not in search(api, attribute("seats", "gt", -1000))
    assert "d" in search(api, attribute("seats", "gt", -1000, inverse=True))


def test_event_conditions(api: Api) -> None:
    people(api)
    track(api, "a", "purchase", data={"price": 120})
    track(api, "a", "purchase", data={"price": 5})
    track(api, "b", "purchase", data={"price": 30})
    track(api, "c", "refund")
    assert search(api, {"event": {"name": "purchase"}}) == {"a", "b"}
    assert search(api, {"event": {"name": "purchase", "inverse": True}}) == {"c"}
    exactly_one = {"event": {"name": "purchase", "count": {"operator": "exactly", "value": 1}}}
    assert search(api, exactly_one) == {"b"}
    at_most_one = {"event": {"name": "purchase", "count": {"operator": "at_most", "value": 1}}}
    assert search(api, at_most_one) == {"b", "c"}
    at_least_two = {
        "event": {"name": "purchase", "count": {"operator": "at_least", "value": 2}, "within": "ever"}
    }
    assert search(api, at_least_two) == {"a"}
    pricey = {"event": {"name": "purchase", "filters": [{"field": "price", "operator": "gte", "value": 30}]}}
    assert search(api, pricey) == {"a", "b"}
    recent = {"event": {"name": "purchase", "within": {"days": 1}}}
    assert search(api, recent) == {"a", "b"}
    prefix = {"event": {"name": {"operator": "starts_with", "value": "pur"}}}
    assert search(api, prefix) == {"a", "b"}
    mixed = {"and": [{"event": {"name": "purchase"}}, {"not": attribute("plan", "eq", "free")}]}
    assert search(api, mixed) == {"a"}


def test_pages_with_limit_and_next(api: Api) -> None:
    for index in range(5):
        identify(api, f"p{index}", plan="pro", email=f"p{index}@example.com")
    identify(api, "other", plan="free")
    seen: list[str] = []
    start = ""
    pages = 0
    while True:
        params: Json = {"limit": 2}
        if start:
            params["start"] = start
        page = ok(api.app.post("/v1/customers", params=params, json={"filter": PRO}))
        pages += 1
        assert set(page) == {"identifiers", "ids", "next"}
        assert len(page["ids"]) <= 2
        assert [i["id"] for i in page["identifiers"]] == page["ids"]
        for identifiers in page["identifiers"]:
            assert identifiers["email"] == f"{identifiers['id']}@example.com"
            assert identifiers["cio_id"]
        seen.extend(page["ids"])
        start = page["next"]
        if not start:
            break
    assert pages == 3
    assert sorted(seen) == [f"p{i}" for i in range(5)]
    assert search(api, PRO, limit=1000) == {f"p{i}" for i in range(5)}


def test_bad_requests_name_the_problem(api: Api) -> None:
    too_many = api.app.post("/v1/customers", params={"limit": 1001}, json={"filter": PRO})
    assert "limit" in app_error(too_many, (400, 422))
    assert "filter" in app_error(api.app.post("/v1/customers", json={}), 400)
    assert "filter" in app_error(api.app.post("/v1/customers", json={"filters": PRO}), 400)
    unknown = api.app.post(
        "/v1/customers",
        json={"filter": {"and": [PRO, {"attribute": {"field": "plan", "operator": "like", "value": "p"}}]}},
    )
    assert "filter.and[1].attribute.operator" in app_error(unknown, 400)
    not_a_condition = api.app.post("/v1/customers", json={"filter": {"or": [PRO, {"shape": {}}]}})
    assert "filter.or[1]" in app_error(not_a_condition, 400)
    not_a_number = api.app.post(
        "/v1/customers", json={"filter": {"attribute": {"field": "age", "operator": "gt", "value": "x"}}}
    )
    assert "filter.attribute.value" in app_error(not_a_number, 400)
    empty = api.app.post("/v1/customers", json={"filter": {}})
    assert "filter" in app_error(empty, 400)
    cursor = api.app.post("/v1/customers", params={"start": "nope"}, json={"filter": PRO})
    app_error(cursor, 400)


def test_search_stays_in_its_workspace(api: Api, other_api: Api) -> None:
    identify(api, "mine", plan="pro")
    identify(other_api, "theirs", plan="pro")
    manual = create_segment(api, "Picked")
    ok(api.track.post(f"/api/v1/segments/{manual}/add_customers", json={"ids": ["mine"]}))
    assert search(api, PRO) == {"mine"}
    assert search(other_api, PRO) == {"theirs"}
    assert search(other_api, attribute("plan", "exists", inverse=True)) == set()
    # Another workspace's segment finds nobody (or is refused), never this workspace's people.
    borrowed = other_api.app.post("/v1/customers", json={"filter": {"segment": {"id": manual}}})
    if borrowed.status_code == 200:
        assert borrowed.json()["ids"] == []
    else:
        app_error(borrowed, (400, 404))
