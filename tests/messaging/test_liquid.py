"""The Liquid engine: Customer.io's tags, filters and undefined rules, escaping, limits and caching."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tidings.errors import InvalidInput
from tidings.messaging.liquid import Limits, LiquidTemplates, RenderFailed, TemplateInvalid

TS = 1_700_000_000  # 2023-11-14 22:13:20 UTC, a Tuesday


class FakeLinks:
    """A delivery's links; URLs carry ``&`` so escaping (or its absence) shows."""

    def __init__(self) -> None:
        self.tracked_urls: list[str] = []
        self.languages: list[str | None] = []

    def unsubscribe_url(self) -> str:
        return "https://t.example/u/abc?a=1&b=2"

    def subscription_preferences_url(self) -> str:
        return "https://t.example/p/abc"

    def view_in_browser_url(self) -> str:
        return "https://view.example:8443/deliveries/abc?x=1"

    def tracking_consent_url(self) -> str:
        return "https://t.example/c/abc"

    def tracked(self, url: str) -> str:
        self.tracked_urls.append(url)
        return f"https://t.example/click?u={url}&d=abc"

    def link_id(self, url: str) -> str:
        return f"L[{url}]"

    def topic_name(self, language: str | None) -> str:
        self.languages.append(language)
        return {"pt": "Novidades & ofertas"}.get(language or "", "News & offers")


# Every test runs against the compiled renders (compiled at the first render) and python-liquid's tree
# walker (never compiled), which they must match.
@pytest.fixture(scope="module", params=[1, 0], ids=["compiled", "tree"])
def compile_after(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="module")
def liquid(compile_after: int) -> LiquidTemplates:
    return LiquidTemplates(compile_after=compile_after)


def render(
    liquid: LiquidTemplates,
    source: str,
    context: dict[str, Any] | None = None,
    *,
    html: bool = False,
    links: FakeLinks | None = None,
) -> str:
    return liquid.render(source, context or {}, field="body", html=html, links=links)


def failure(
    liquid: LiquidTemplates, source: str, context: dict[str, Any] | None = None, *, html: bool = False
) -> RenderFailed:
    with pytest.raises(RenderFailed) as info:
        render(liquid, source, context, html=html)
    return info.value


def fails_fast(liquid: LiquidTemplates, source: str, context: dict[str, Any], limit: str) -> RenderFailed:
    started = time.perf_counter()
    err = failure(liquid, source, context)
    assert time.perf_counter() - started < 2, f"took {time.perf_counter() - started:.1f}s"
    assert err.limit == limit, str(err)
    return err


# -- variables and context ----------------------------------------------------------------------------


def test_renders_every_context_object(liquid: LiquidTemplates) -> None:
    context = {
        "customer": {"first_name": "Ann"},
        "event": {"plan": "pro"},
        "trigger": {"order": {"id": 7}},
        "journey": {"step": "welcome"},
        "objects": {"courses": [{"name": "Liquid 101"}]},
        "campaign": {"id": 3, "name": "Onboarding", "type": "behavioral"},
        "message": {"id": 9, "subject": "Hi"},
        "layout": {"id": 2, "name": "Basic"},
        "delivery_id": "dlv_1",
    }
    source = (
        "{{ customer.first_name }}|{{ event.plan }}|{{ trigger.order.id }}|{{ journey.step }}|"
        "{{ objects.courses[0].name }}|{{ campaign.name }}|{{ message.subject }}|{{ layout.name }}|"
        "{{ delivery_id }}"
    )
    assert render(liquid, source, context) == "Ann|pro|7|welcome|Liquid 101|Onboarding|Hi|Basic|dlv_1"


def test_string_attributes_are_coerced_by_math_filters(liquid: LiquidTemplates) -> None:
    customer = {"age": "41", "score": "2.5"}
    source = "{{ customer.age | plus: 1 }} {{ customer.age | minus: '1' }} {{ customer.score | times: 2 }}"
    assert render(liquid, source, {"customer": customer}) == "42 40 5.0"


def test_null_attribute_renders_empty_not_undefined(liquid: LiquidTemplates) -> None:
    assert render(liquid, "[{{ customer.nickname }}]", {"customer": {"nickname": None}}) == "[]"


def test_unsubscribe_url_as_a_variable_renders_empty(liquid: LiquidTemplates) -> None:
    assert render(liquid, "[{{ unsubscribe_url }}]", {}, links=FakeLinks()) == "[]"


def test_render_does_not_modify_the_context(liquid: LiquidTemplates) -> None:
    context: dict[str, Any] = {"customer": {"n": "1"}, "snippets": {"s": "x"}, "content": "<p>c</p>"}
    before = repr(context)
    render(liquid, "{% assign a = 1 %}{{ snippets.s }}{{ content }}", context, html=True)
    assert repr(context) == before


# -- undefined variables --------------------------------------------------------------------------------


def test_undefined_output_fails_naming_the_path_line_and_column(liquid: LiquidTemplates) -> None:
    err = failure(liquid, "Hello\n  {{ customer.plan.name }}", {"customer": {"plan": {}}})
    assert str(err) == "body: line 2, column 6: customer.plan.name is undefined"
    assert (err.field, err.line, err.column, err.variable) == ("body", 2, 6, "customer.plan.name")


def test_undefined_root_object_fails_with_the_whole_path(liquid: LiquidTemplates) -> None:
    err = failure(liquid, "{{ customer.first_name }}", {})
    assert err.variable == "customer.first_name"
    assert str(err) == "body: line 1, column 4: customer.first_name is undefined"


@pytest.mark.parametrize(
    ("source", "variable"),
    [
        ("{% for x in customer.items %}{% endfor %}", "customer.items"),
        ("{% assign a = customer.x %}", "customer.x"),
        ("{{ customer.x | size }}", "customer.x"),
        ("{{ customer.x | upcase | default: 'y' }}", "customer.x"),
        ("{{ 'a' | append: customer.x }}", "customer.x"),
        ("{{ customer['first name'] }}", "customer['first name']"),
        ("{% assign k = 'x' %}{{ customer[k] }}", "customer[k]"),
        ("{% echo customer.x %}", "customer.x"),
        ("{% for p in objects.products %}{{ p.price }}{% endfor %}", "p.price"),
        ("{% render_liquid journey.body %}", "journey.body"),
    ],
)
def test_using_an_undefined_value_fails(liquid: LiquidTemplates, source: str, variable: str) -> None:
    context = {"customer": {}, "objects": {"products": [{"name": "a"}]}, "journey": {}}
    assert failure(liquid, source, context).variable == variable


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ customer.x | default: 'there' }}", "there"),
        ("{{ customer.x.y | default: 'there' | upcase }}", "THERE"),
        ("{% assign n = customer.x | default: 'z' %}{{ n }}", "z"),
        ("{% if customer.x %}yes{% else %}no{% endif %}", "no"),
        ("{% if false %}a{% elsif customer.x %}b{% else %}c{% endif %}", "c"),
        ("{% unless customer.x %}missing{% endunless %}", "missing"),
        ("{% case customer.plan %}{% when 'pro' %}pro{% else %}other{% endcase %}", "other"),
        ("{% case 'pro' %}{% when customer.plan %}match{% else %}other{% endcase %}", "other"),
        ("{% if customer.x == blank %}blank{% endif %}", "blank"),
        ("{% if customer.x != blank %}{{ customer.x }}{% else %}Hello there{% endif %}", "Hello there"),
        ("{% if customer.x == empty %}empty{% else %}not empty{% endif %}", "not empty"),
        ("{% if customer.x == nil %}nil{% endif %}", "nil"),
        ("{% if customer.x.size > 0 %}some{% else %}none{% endif %}", "none"),
        ("{% if customer.x contains 'a' %}a{% else %}no a{% endif %}", "no a"),
        ("{% if customer.x or customer.y %}one{% else %}neither{% endif %}", "neither"),
        ("{% if missing.deeply.nested and true %}x{% else %}guarded{% endif %}", "guarded"),
    ],
)
def test_conditions_and_default_guard_undefined_values(
    liquid: LiquidTemplates, source: str, expected: str
) -> None:
    assert render(liquid, source, {"customer": {}}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "blank"), ("  ", "blank"), (None, "blank"), (False, "blank"), ([], "blank"), ("Ann", "Ann")],
)
def test_blank_matches_nil_false_and_whitespace(
    liquid: LiquidTemplates, value: object, expected: str
) -> None:
    source = "{% if customer.x == blank %}blank{% else %}{{ customer.x }}{% endif %}"
    assert render(liquid, source, {"customer": {"x": value}}) == expected


def test_default_keeps_zero_and_replaces_empty_values(liquid: LiquidTemplates) -> None:
    context = {"c": {"zero": 0, "blank_str": "", "no": False, "list": [], "nothing": None}}
    source = "{{ c.zero | default: 9 }}{{ c.blank_str | default: 'e' }}{{ c.no | default: 'f' }}"
    source += "{{ c.list | default: 'l' }}{{ c.nothing | default: 'n' }}"
    source += "{{ c.no | default: 't', allow_false: true }}"
    assert render(liquid, source, context) == "0efln" + "false"


# -- escaping -----------------------------------------------------------------------------------------------


def test_html_mode_escapes_output_and_text_mode_does_not(liquid: LiquidTemplates) -> None:
    context = {"customer": {"name": '<b>Tom & "Jerry"</b>'}}
    assert render(liquid, "{{ customer.name }}", context) == '<b>Tom & "Jerry"</b>'
    assert render(liquid, "{{ customer.name }}", context, html=True) == (
        "&lt;b&gt;Tom &amp; &#34;Jerry&#34;&lt;/b&gt;"
    )


def test_template_text_and_literals_are_not_escaped(liquid: LiquidTemplates) -> None:
    source = '<p class="x">{{ "<i>" }}{% assign t = "<u>" %}{{ t }}</p>'
    assert render(liquid, source, html=True) == '<p class="x"><i><u></p>'


def test_escape_filter_does_not_double_escape(liquid: LiquidTemplates) -> None:
    context = {"customer": {"name": "<b>&"}}
    assert render(liquid, "{{ customer.name | escape }}", context, html=True) == "&lt;b&gt;&amp;"
    assert render(liquid, "{{ customer.name | escape }}", context) == "&lt;b&gt;&amp;"
    assert render(liquid, "{{ customer.name | escape_once }}", {"customer": {"name": "&lt;b&gt;"}}) == (
        "&lt;b&gt;"
    )


def test_escape_does_not_url_encode(liquid: LiquidTemplates) -> None:
    assert render(liquid, "{{ 'a b/c?d=é' | escape }}") == "a b/c?d=é"


def test_content_snippets_and_render_liquid_output_are_trusted_html(liquid: LiquidTemplates) -> None:
    context = {
        "content": "<table><tr><td>body</td></tr></table>",
        "snippets": {"footer": "<footer>{{ customer.name }}</footer>"},
        "journey": {"block": "<em>{{ customer.name }}</em>"},
        "customer": {"name": "A&B"},
    }
    source = "{{ content }}{{ snippets.footer }}{% render_liquid journey.block %}"
    assert render(liquid, source, context, html=True) == (
        "<table><tr><td>body</td></tr></table><footer>A&amp;B</footer><em>A&amp;B</em>"
    )


def test_reshaping_trusted_html_keeps_it_trusted(liquid: LiquidTemplates) -> None:
    context = {"snippets": {"s": "<p>\n  hello   world\n</p>"}, "customer": {"name": "<i>a  b</i>"}}
    source = "{{ snippets.s | normalize_whitespace | titlecase }}|{{ customer.name | normalize_whitespace }}"
    assert render(liquid, source, context, html=True) == "<p> Hello World </p>|&lt;i&gt;a b&lt;/i&gt;"


def test_deeply_nested_expressions_are_refused(liquid: LiquidTemplates) -> None:
    with pytest.raises(TemplateInvalid) as info:
        liquid.validate("{% if " + " and ".join(["a"] * 3000) + " %}x{% endif %}", field="body")
    assert str(info.value) == "body: template is nested too deeply"


def test_safe_filter_outputs_an_attribute_unescaped(liquid: LiquidTemplates) -> None:
    context = {"event": {"html": "<b>x</b>"}}
    assert render(liquid, "{{ event.html | safe }}", context, html=True) == "<b>x</b>"


# -- snippets ----------------------------------------------------------------------------------------------


def test_snippets_render_their_liquid_by_dot_or_bracket(liquid: LiquidTemplates) -> None:
    context = {
        "snippets": {"footer": "Bye {{ customer.name }}", "main address": "1 Main St"},
        "customer": {"name": "Ann"},
    }
    assert (
        render(liquid, '{{ snippets.footer }} / {{ snippets["main address"] }}', context)
        == "Bye Ann / 1 Main St"
    )


def test_snippets_nest(liquid: LiquidTemplates) -> None:
    context = {
        "snippets": {"outer": "[{{ snippets.inner }}]", "inner": "({{ snippets.leaf }})", "leaf": "leaf"}
    }
    assert render(liquid, "{{ snippets.outer }}", context) == "[(leaf)]"


def test_snippets_do_not_see_the_bodys_assigns(liquid: LiquidTemplates) -> None:
    context = {"snippets": {"s": "{% if local %}seen{% else %}isolated{% endif %}{% assign mine = 1 %}"}}
    source = "{% assign local = true %}{{ snippets.s }}{% if mine %}leaked{% endif %}"
    assert render(liquid, source, context) == "isolated"


def test_non_string_snippet_values_are_data(liquid: LiquidTemplates) -> None:
    context = {"snippets": {"greetings": [{"v": "1", "g": "Hi"}, {"v": "2", "g": "Hey"}]}}
    assert render(liquid, "{% for g in snippets.greetings %}{{ g.g }}{% endfor %}", context) == "HiHey"


def test_missing_snippet_is_undefined(liquid: LiquidTemplates) -> None:
    assert failure(liquid, "{{ snippets.nope }}", {"snippets": {}}).variable == "snippets.nope"


def test_failure_inside_a_snippet_points_at_both_places(liquid: LiquidTemplates) -> None:
    context = {"snippets": {"footer": "ok\n {{ customer.zip }}"}, "customer": {}}
    err = failure(liquid, "line one\n  {{ snippets.footer }}", context)
    assert (err.line, err.column, err.variable) == (2, 6, "customer.zip")
    assert (
        str(err) == "body: line 2, column 6: in snippet 'footer', line 2, column 5: customer.zip is undefined"
    )


def test_snippet_with_a_syntax_error_fails_the_render(liquid: LiquidTemplates) -> None:
    err = failure(liquid, "{{ snippets.bad }}", {"snippets": {"bad": "{% if %}"}})
    assert "in snippet 'bad': line 1, column 4: missing expression" in str(err)


def test_recursive_snippet_hits_the_depth_limit_fast(liquid: LiquidTemplates) -> None:
    err = fails_fast(
        liquid, "{{ snippets.a }}", {"snippets": {"a": "x{{ snippets.b }}", "b": "{{ snippets.a }}"}}, "depth"
    )
    assert str(err) == (
        "body: line 1, column 4: nesting depth limit of 30 reached "
        "(a snippet or render_liquid that renders itself?)"
    )


def test_snippet_fan_out_runs_out_of_budget_fast(liquid: LiquidTemplates) -> None:
    # 20 levels, each rendering the next twice: a million renders without a budget.
    snippets = {f"s{i}": f"{{{{ snippets.s{i + 1} }}}}{{{{ snippets.s{i + 1} }}}}" for i in range(20)}
    snippets["s20"] = ""
    fails_fast(liquid, "{{ snippets.s0 }}", {"snippets": snippets}, "loop_iterations")


def test_depth_limit_counts_nested_renders(compile_after: int) -> None:
    liquid = LiquidTemplates(Limits(depth=3), compile_after=compile_after)
    chain = {"a": "a{{ snippets.b }}", "b": "b{{ snippets.c }}", "c": "c{{ snippets.d }}", "d": "d"}
    with pytest.raises(RenderFailed) as info:
        liquid.render("{{ snippets.a }}", {"snippets": chain}, field="body")
    assert info.value.limit == "depth"
    assert liquid.render("{{ snippets.b }}", {"snippets": chain}, field="body") == "bcd"


# -- Customer.io tags --------------------------------------------------------------------------------


def test_url_tags_render_the_delivery_links_unescaped(liquid: LiquidTemplates) -> None:
    source = (
        "{% unsubscribe_url %}|{% unsubscribe %}|{% manage_subscription_preferences_url %}|"
        "{% view_in_browser_url %}|{% tracking_consent_url %}"
    )
    expected = (
        "https://t.example/u/abc?a=1&b=2|https://t.example/u/abc?a=1&b=2|https://t.example/p/abc|"
        "https://view.example:8443/deliveries/abc?x=1|https://t.example/c/abc"
    )
    assert render(liquid, source, links=FakeLinks(), html=True) == expected
    assert render(liquid, source, links=FakeLinks()) == expected


def test_url_tags_render_empty_without_links(liquid: LiquidTemplates) -> None:
    source = "[{% unsubscribe_url %}{% view_in_browser_url %}{% cio_link_id %}{% subscription_topic_name %}]"
    assert render(liquid, source) == "[]"


def test_url_tags_inside_blocks_are_output(liquid: LiquidTemplates) -> None:
    source = "{% if true %}{% unsubscribe_url %}{% endif %}"
    assert render(liquid, source, links=FakeLinks()) == "https://t.example/u/abc?a=1&b=2"


def test_cio_link_tracks_by_default(liquid: LiquidTemplates) -> None:
    links = FakeLinks()
    out = render(liquid, "{% cio_link url:https://example.com/a?b=1 %}", links=links)
    assert out == "https://t.example/click?u=https://example.com/a?b=1&d=abc"
    assert links.tracked_urls == ["https://example.com/a?b=1"]
    render(liquid, "{% cio_link url:'https://example.com/h' %}", links=links, html=True)
    assert type(links.tracked_urls[-1]) is str


def test_cio_link_arguments(liquid: LiquidTemplates) -> None:
    links = FakeLinks()
    context = {"customer": {"link": "https://example.com/p?x=1&y=<2>"}}
    source = (
        '{% cio_link url:"https://example.com/q" track:true url_params:false %}|'
        "{% cio_link url:'https://example.com/r' track:false %}|"
        "{% cio_link url:customer.link track:false %}"
    )
    assert render(liquid, source, context, links=links, html=True) == (
        "https://t.example/click?u=https://example.com/q&d=abc|https://example.com/r|"
        "https://example.com/p?x=1&amp;y=&lt;2&gt;"
    )
    assert render(liquid, "{% cio_link url:customer.link %}", context) == "https://example.com/p?x=1&y=<2>"


def test_cio_link_needs_a_url(liquid: LiquidTemplates) -> None:
    with pytest.raises(TemplateInvalid, match="cio_link needs url:"):
        liquid.validate("{% cio_link track:true %}", field="body")


def test_cio_link_id_is_the_id_of_the_enclosing_link(liquid: LiquidTemplates) -> None:
    source = '<a href="https://example.com/confirm?link_id={% cio_link_id %}" class="untracked">x</a>'
    assert render(liquid, source, links=FakeLinks(), html=True) == (
        '<a href="https://example.com/confirm?link_id=L[https://example.com/confirm?link_id=]" '
        'class="untracked">x</a>'
    )
    assert (
        render(liquid, "{% cio_link_id url:'https://a.example' %}", links=FakeLinks())
        == "L[https://a.example]"
    )


@pytest.mark.parametrize(
    ("source", "expected", "language"),
    [
        ("{% subscription_topic_name %}", "News &amp; offers", None),
        ("{% subscription_topic_name lang:'pt' %}", "Novidades &amp; ofertas", "pt"),
        ("{% subscription_topic_name lang='pt' %}", "Novidades &amp; ofertas", "pt"),
        ("{% subscription_topic_name lang=pt %}", "Novidades &amp; ofertas", "pt"),
    ],
)
def test_subscription_topic_name(
    liquid: LiquidTemplates, source: str, expected: str, language: str | None
) -> None:
    links = FakeLinks()
    assert render(liquid, source, links=links, html=True) == expected
    assert links.languages == [language]
    assert all(type(seen) is str for seen in links.languages if seen is not None)


def test_generate_uuid_is_a_fresh_uuid4(liquid: LiquidTemplates) -> None:
    first, second = render(liquid, "{% generate_uuid %} {% generate_uuid %}").split()
    assert uuid.UUID(first).version == 4
    assert first != second


def test_random_tag_stays_in_range(liquid: LiquidTemplates) -> None:
    seen = {int(render(liquid, "{% random 3 %}")) for _ in range(200)}
    assert seen == {0, 1, 2}
    assert render(liquid, "{% random customer.n %}", {"customer": {"n": "1"}}) == "0"
    assert "positive whole number" in str(failure(liquid, "{% random 0 %}"))


def test_render_liquid_renders_data_against_the_same_context(liquid: LiquidTemplates) -> None:
    context = {
        "journey": {"body": "Hello {{ customer.first_name }}! {% assign seen = 'yes' %}"},
        "customer": {"first_name": "Ann"},
    }
    assert render(liquid, "{% render_liquid journey.body %}{{ seen }}", context) == "Hello Ann! yes"
    assert render(liquid, "[{% render_liquid journey.none | default: nil %}]", context) == "[]"


def test_render_liquid_failures_name_render_liquid(liquid: LiquidTemplates) -> None:
    err = failure(liquid, "\n{% render_liquid journey.body %}", {"journey": {"body": "{{ x }}"}})
    assert str(err) == "body: line 2, column 4: in render_liquid, line 1, column 4: x is undefined"
    assert err.variable == "x"
    bad = failure(liquid, "{% render_liquid journey.body %}", {"journey": {"body": "{% for %}"}})
    assert "in render_liquid: line 1, column 4:" in str(bad)


def test_recursive_render_liquid_hits_the_depth_limit_fast(liquid: LiquidTemplates) -> None:
    fails_fast(
        liquid, "{% render_liquid journey.x %}", {"journey": {"x": "{% render_liquid journey.x %}"}}, "depth"
    )


COUNTDOWN = (
    '{% countdown point:64 font:roboto weight:light fg:000000 bg:f2f6f9 time:"2022-07-04 12:00:00 (GMT)" '
    "locale:en looping:true resolution:S frames:2 %}"
)
COUNTDOWN_URL = (
    "https://view.example:8443/countdown?point=64&font=roboto&weight=light&fg=000000&bg=f2f6f9"
    "&time=2022-07-04+12%3A00%3A00+%28GMT%29&locale=en&looping=true&resolution=S&frames=2"
)


def test_countdown_renders_an_image_in_html_and_a_url_in_text(liquid: LiquidTemplates) -> None:
    assert render(liquid, COUNTDOWN, links=FakeLinks(), html=True) == (
        f'<img src="{COUNTDOWN_URL.replace("&", "&amp;")}" alt="" style="display:block;border:0">'
    )
    assert render(liquid, COUNTDOWN, links=FakeLinks()) == COUNTDOWN_URL
    assert render(liquid, COUNTDOWN) == ""


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% countdown point:64 fg:000 bg:fff %}", "countdown needs time:"),
        (
            '{% countdown point:64 fg:red bg:fff time:"2022-07-04 12:00:00 (GMT)" %}',
            "countdown fg: expected a hex",
        ),
        ("{% countdown point:64 fg:000 bg:fff time:customer.when %}", "must be written out"),
        ('{% countdown point:64 fg:000 bg:fff time:"2022-13-04 12:00:00 (GMT)" %}', "not a valid date"),
        ('{% countdown point:64 fg:000 bg:fff time:"2022-07-04 12:00:00" frames:61 %}', "expected 1 to 60"),
        ("{% unsubscribe_url now %}", "'unsubscribe_url' takes no arguments"),
        ("{% cio_link url:x colour:red %}", "'cio_link' has no argument 'colour'"),
        ("{% cio_link url:x ~~~ %}", "expected arguments like name:value"),
    ],
)
def test_tag_arguments_are_checked_on_save(liquid: LiquidTemplates, source: str, message: str) -> None:
    with pytest.raises(TemplateInvalid) as info:
        liquid.validate(source, field="body")
    assert message in str(info.value)
    assert info.value.line == 1
    assert info.value.column is not None


# -- filters --------------------------------------------------------------------------------

ITEMS = [
    {"name": "A", "type": "kitchen", "size": 40, "price": "2.5"},
    {"name": "B", "type": "bath", "size": 10, "price": "1"},
    {"name": "C", "type": "kitchen", "size": 5, "price": 3},
]
FILTER_CONTEXT: dict[str, Any] = {
    "customer": {
        "name": "ann lee",
        "ts": TS,
        "tz": "America/New_York",
        "items": ITEMS,
        "csv": "a,b,c",
        "markup": '<a href="x">&\'</a>',
    },
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # strings
        ("{{ customer.name | titlecase }}", "Ann Lee"),
        ("{{ 3 | pluralize: 'item', 'items' }}", "3 items"),
        ("{{ 1 | pluralize: 'item', 'items' }}", "1 item"),
        ("{{ '2' | pluralize: 'box', 'boxes' }}", "2 boxes"),
        ("{{ 0 | pluralize: 'cat' }}", "0 cats"),
        ("{{ 'Hello, World! Ça va_bien' | slugify }}", "hello-world-ça-va-bien"),
        ("{{ customer.csv | split: ',' | array_to_sentence_string }}", "a, b, and c"),
        ("{{ customer.csv | split: ',' | array_to_sentence_string: 'or' }}", "a, b, or c"),
        ("{{ 'a,b' | split: ',' | array_to_sentence_string }}", "a and b"),
        ("{{ 'a' | split: ',' | array_to_sentence_string }}", "a"),
        ("{{ ' one two\tthree\n' | number_of_words }}", "3"),
        ("{{ ' a \n\t b  c ' | normalize_whitespace }}", "a b c"),
        ("{{ 'hi?' | base64 }}", "aGk/"),
        ("{{ 'hi?' | base64_encode }}", "aGk/"),
        ("{{ 'aGk/' | base64_decode }}", "hi?"),
        ("{{ 'hi?' | base64_url_safe_encode }}", "aGk_"),
        ("{{ 'aGk_' | base64_url_safe_decode }}", "hi?"),
        ("{{ 'abcd' | hex_base64 }}", "q80="),
        ("{{ 'x' | md5 }}", "9dd4e461268c8034f5c8564e155c67a6"),
        ("{{ 'x' | sha1 }}", "11f6ad8ec52a2984abaafd7c3b516503785c2072"),
        ("{{ 'x' | sha256 }}", hashlib.sha256(b"x").hexdigest()),
        ("{{ 'x' | sha256: 'k' }}", hmac.new(b"k", b"x", "sha256").hexdigest()),
        ("{{ 'x' | hmac_sha256: 'k' }}", hmac.new(b"k", b"x", "sha256").hexdigest()),
        ("{{ 'x' | hmac_sha1: 'k' }}", hmac.new(b"k", b"x", "sha1").hexdigest()),
        (
            "{{ 'Customer.io' | hmac_sha256: 'some_key' | hex_base64 }}",
            base64.b64encode(hmac.new(b"some_key", b"Customer.io", "sha256").digest()).decode(),
        ),
        ("{{ 'overview: account' | cgi_escape }}", "overview%3A+account"),
        ("{{ 'https://example.com/?q=foo, \\bar?' | uri_escape }}", "https://example.com/?q=foo,%20%5Cbar?"),
        ("{{ customer.markup | xml_escape }}", "&lt;a href=&quot;x&quot;&gt;&amp;'&lt;/a&gt;"),
        ("{{ '%27Customer.io+is+great%27' | url_decode }}", "'Customer.io is great'"),
        ("{{ 'cool.person@example.com' | url_encode }}", "cool.person%40example.com"),
        # numbers
        ("{{ 10000 | format_number }}", "10,000"),
        ("{{ 1234.5678 | format_number }}", "1,234.568"),
        ("{{ 123456.78 | format_number: 'fr' }}", "123\u202f456,78"),
        ("{{ '1234567.5' | format_number: 'de' }}", "1.234.567,5"),
        ("{{ 1234567.896 | currency }}", "$1,234,567.90"),
        ("{{ 1234567.896 | currency: 'en-GB' }}", "£1,234,567.90"),
        ("{{ 1234567.896 | currency: 'en', 'EUR' }}", "€1,234,567.90"),
        ("{{ 1234567.896 | currency: 'fr' }}", "1\u202f234\u202f567,90\u00a0€"),
        ("{{ 1234567.896 | rounded_currency }}", "$1,234,568"),
        ("{{ 1234567.896 | rounded_currency: 'en', 'EUR' }}", "€1,234,568"),
        ("{{ 2.5 | rounded_currency: 'de' }}", "3\u00a0€"),
        ("{{ 1 | random }}", "0"),
        ("{{ customer.csv | split: ',' | slice: 1 | random }}", "b"),
        # dates (unix seconds in, unix seconds out)
        ("{{ customer.ts | add_day: 1 }}", str(TS + 86_400)),
        ("{{ customer.ts | add_day }}", str(TS + 86_400)),
        ("{{ customer.ts | subtract_day: 2 }}", str(TS - 2 * 86_400)),
        ("{{ '1706659200' | add_month: 1 | date: '%Y-%m-%d' }}", "2024-02-29"),
        ("{{ 1706659200 | subtract_month: 2 | date: '%Y-%m-%d' }}", "2023-11-30"),
        ("{{ 1709164800 | add_year: 1 | date: '%Y-%m-%d' }}", "2025-02-28"),
        ("{{ customer.ts | subtract_year: 1 | date: '%Y-%m-%d %H:%M:%S' }}", "2022-11-14 22:13:20"),
        ("{{ customer.ts | timezone: customer.tz | date: '%H:%M %Z' }}", "17:13 EST"),
        ("{{ customer.ts | date_to_long_string }}", "14 November 2023"),
        ("{{ customer.ts | date_to_long_string: 'ordinal' }}", "14th November 2023"),
        ("{{ customer.ts | date_to_long_string: 'ordinal', 'US' }}", "November 14th, 2023"),
        ("{{ customer.ts | date_to_string }}", "14 Nov 2023"),
        ("{{ 1698796800 | date_to_string: 'ordinal' }}", "1st Nov 2023"),
        ("{{ 1698883200 | date_to_string: 'ordinal', 'US' }}", "Nov 2nd, 2023"),
        ("{{ customer.ts | date_to_rfc822 }}", "Tue, 14 Nov 2023 22:13:20 +0000"),
        ("{{ customer.ts | date_to_xmlschema }}", "2023-11-14T22:13:20+00:00"),
        # arrays
        ("{{ customer.items | find: 'type', 'kitchen' | map: 'name' }}", "A"),
        ("{{ customer.items | find_exp: 'item', 'item.size < 20' | map: 'name' }}", "B"),
        ("{{ customer.items | find_exp: 'item', 'item.missing' | json }}", "null"),
        (
            "{{ customer.items | where_exp: 'item', \"item.size > 4 and item.type == 'kitchen'\" "
            "| map: 'name' | join }}",
            "A C",
        ),
        ("{{ customer.items | where_not: 'type', 'kitchen' | map: 'name' | join }}", "B"),
        ("{{ customer.items | group_by: 'type' | map: 'name' | join: ',' }}", "kitchen,bath"),
        ("{{ customer.items | group_by: 'type' | map: 'size' | join: ',' }}", "2,1"),
        ("{% assign g = customer.items | group_by: 'type' %}{{ g[0].items | map: 'name' | join }}", "A C"),
        (
            "{{ customer.items | group_by_exp: 'item', \"item.type contains 'kit'\" | map: 'name' | json }}",
            "[true,false]",
        ),
        (
            "{{ customer.items | group_by_exp: 'item', 'item.type | upcase' | map: 'name' | join }}",
            "KITCHEN BATH",
        ),
        ("{{ customer.items | map: 'type' | json_array_uniq | json }}", '["kitchen","bath"]'),
        ("{{ customer.items | json_array_uniq: 'type' | map: 'name' | join }}", "A B"),
        ("{{ customer.items | limit: 2 | map: 'name' | join }}", "A B"),
        ("{% assign few = customer.items | limit: 1 %}{{ few | size }}", "1"),
        ("{{ customer.items | sum: 'price' }}", "6.5"),
        ("{{ customer.csv | split: ',' | push: 'd' | join }}", "a b c d"),
        ("{{ customer.csv | split: ',' | pop | join }}", "a b"),
        ("{{ customer.csv | split: ',' | shift | join }}", "b c"),
        ("{{ customer.csv | split: ',' | unshift: 'z' | join }}", "z a b c"),
        # JSON
        ("{{ customer.items[1] | to_json }}", '{"name":"B","type":"bath","size":10,"price":"1"}'),
        ("{{ customer.csv | split: ',' | json }}", '["a","b","c"]'),
        ("{{ customer.csv | split: ',' | json: 2 }}", '[\n  "a",\n  "b",\n  "c"\n]'),
        ('{% assign v = \'{"key":"value","n":[1,2]}\' | from_json %}{{ v.key }}{{ v.n[1] }}', "value2"),
    ],
)
def test_filters(liquid: LiquidTemplates, source: str, expected: str) -> None:
    assert render(liquid, source, FILTER_CONTEXT) == expected


def test_random_filter_picks_from_its_input(liquid: LiquidTemplates) -> None:
    picks = {render(liquid, "{{ customer.csv | split: ',' | random }}", FILTER_CONTEXT) for _ in range(100)}
    assert picks == {"a", "b", "c"}
    numbers = {int(render(liquid, "{{ 4 | random }}")) for _ in range(200)}
    assert numbers == {0, 1, 2, 3}


def test_limit_filter_parses_despite_being_a_loop_keyword(liquid: LiquidTemplates) -> None:
    source = "{% liquid\nassign few = customer.items | limit: 2\necho few | limit: 1 | map: 'name'\n%}"
    assert render(liquid, source, FILTER_CONTEXT) == "A"
    assert render(liquid, "{% for i in (1..5) limit: 2 %}{{ i }}{% endfor %}") == "12"


def test_expression_filters_count_as_loop_iterations(compile_after: int) -> None:
    liquid = LiquidTemplates(Limits(loop_iterations=50), compile_after=compile_after)
    context = {"items": list(range(30))}
    assert liquid.render("{{ items | where_exp: 'i', 'i > 27' | join }}", context, field="f") == "28 29"
    with pytest.raises(RenderFailed) as info:
        liquid.render(
            "{{ items | where_exp: 'i', 'i > 1' | size }}{{ items | find_exp: 'i', 'i' }}", context, field="f"
        )
    assert info.value.limit == "loop_iterations"


def test_invalid_expression_argument_fails_at_the_filter(liquid: LiquidTemplates) -> None:
    err = failure(liquid, "{{ customer.items | where_exp: 'item', 'item.size >' }}", FILTER_CONTEXT)
    assert err.column == 21
    assert "invalid expression 'item.size >'" in str(err)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ customer.ts | date: '%Y-%m-%d %H:%M:%S' }}", "2023-11-14 22:13:20"),
        ("{{ '1700000000' | date: '%s' }}", "1700000000"),
        ("{{ '2024-03-05T10:00:00Z' | date: '%B %-d, %Y %I:%M %P' }}", "March 5, 2024 10:00 am"),
        ("{{ '2024-03-05T10:00:00+02:00' | date: '%H:%M %z' }}", "08:00 +0000"),
        ("{{ '2024-03-05' | date: '%A %e %b' }}", "Tuesday  5 Mar"),
        ("{{ 'Tue, 14 Nov 2023 22:13:20 +0000' | date: '%s' }}", str(TS)),
        ("{{ customer.ts | date: '%H:%M %A %b %d, %Y', customer.tz }}", "17:13 Tuesday Nov 14, 2023"),
        ("{{ customer.ts | date: '%H:%M %z', 360 }}", "16:13 -0600"),
        ("{{ customer.ts | date: '%H:%M %:z', -330 }}", "03:43 +05:30"),
        ("{{ customer.ts | date: '%H:%M', '(GMT-11:00) Hawaii' }}", "11:13"),
        ("{{ customer.ts | date: '%H:%M %z', '+05:30' }}", "03:43 +0530"),
        ("{{ customer.ts | date: '%H:%M', 'UTC' }}", "22:13"),
        ("{{ customer.ts | date: '%-d/%-m %-I%P %j %q %^a %L %3N %%' }}", "14/11 10pm 318 th TUE 000 000 %"),
        (
            "{{ customer.ts | date: '%u %w %U %W %V %G %C %y %k %l %p %D %F %T %R' }}",
            "2 2 46 46 46 2023 20 23 22 10 PM 11/14/23 2023-11-14 22:13:20 22:13",
        ),
        ("{{ customer.ts | date }}", "Tuesday, November 14, 2023 at 10:13 pm +0000"),
        ("{{ 'not a date' | date: '%Y' }}", "not a date"),
        ("[{{ customer.none | date: '%Y' }}]", "[]"),
    ],
)
def test_date_filter(liquid: LiquidTemplates, source: str, expected: str) -> None:
    context = {"customer": {"ts": TS, "tz": "America/New_York", "none": None}}
    assert render(liquid, source, context) == expected


def test_date_now_is_utc(liquid: LiquidTemplates) -> None:
    year = datetime.now(UTC).year
    assert render(liquid, "{{ 'now' | date: '%Y' }}") in {str(year), str(year + 1)}
    now = int(render(liquid, "{{ 'now' | date: '%s' | plus: 0 | add_day: 1 }}"))
    assert abs(now - (time.time() + 86_400)) < 5


def test_unknown_timezone_fails_the_render(liquid: LiquidTemplates) -> None:
    err = failure(liquid, "{{ 0 | date: '%H', 'Mars/Olympus' }}")
    assert str(err) == "body: line 1, column 8: unknown timezone 'Mars/Olympus'"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' | divided_by: 0 }}", "divided_by: can't divide by 0"),
        ("{{ '{bad' | from_json }}", "from_json: invalid JSON"),
        ("{{ 'abc' | format_number }}", "format_number: expected a number"),
        ("{{ 1 | currency: 'xx-nope' }}", "unknown locale 'xx-nope'"),
        ("{{ 'zz' | hex_base64 }}", "hex_base64: expected a hexadecimal string"),
        ("{{ 'x' | hmac_sha256 }}", "hmac_sha256: a key is required"),
        ("{{ 'soon' | add_day: 1 }}", "add_day: expected a date"),
    ],
)
def test_filter_failures_carry_the_filter_position(
    liquid: LiquidTemplates, source: str, message: str
) -> None:
    err = failure(liquid, source)
    assert message in str(err)
    assert err.line == 1
    assert err.column is not None


# -- limits -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{% for a in (1..1000) %}{% for b in (1..1000) %}{% for c in (1..1000) %}x"
        "{% endfor %}{% endfor %}{% endfor %}",
        "{% for a in (1..1000000) %}{% for b in (1..1000000) %}x{% endfor %}{% endfor %}",
        # Five loops of 5,000: each under the limit, their total over it.
        "{% for a in (1..5000) %}{% endfor %}" * 5,
        "{{ (1..100000000) | join }}",
        "{% tablerow i in (1..9000) cols:3 %}{{ i }}{% endtablerow %}",
    ],
)
def test_loop_iteration_limit(liquid: LiquidTemplates, source: str) -> None:
    err = fails_fast(liquid, source, {}, "loop_iterations")
    assert "loop iteration limit" in str(err)


def test_loop_iteration_limit_message(liquid: LiquidTemplates) -> None:
    err = fails_fast(
        liquid,
        "x\n{% for a in (1..6000) %}{% for b in (1..2) %}{% endfor %}{% endfor %}",
        {},
        "loop_iterations",
    )
    assert str(err) == "body: line 2, column 4: loop iteration limit of 10000 reached"


@pytest.mark.parametrize(
    "source",
    [
        "{% assign s = 'xxxxxxxxxx' %}{% for i in (1..100) %}{% assign s = s | append: s %}{% endfor %}",
        "{% assign s = 'xxxxxxxxxx' %}"
        "{% for i in (1..100) %}{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}",
        "{{ big" + " | append: big" * 50 + " }}",
        "{% for i in (1..9000) %}{{ big }}{% endfor %}",
        "{% for i in (1..9000) %}" + "y" * 200_000 + "{% endfor %}",
        "{% for i in (1..9000) %}{% render_liquid big %}{% endfor %}",
    ],
)
def test_output_limit(liquid: LiquidTemplates, source: str) -> None:
    err = fails_fast(liquid, source, {"big": "x" * 300_000}, "output_bytes")
    assert "output size limit of 1000000 bytes reached" in str(err)


def test_output_limit_counts_bytes(compile_after: int) -> None:
    liquid = LiquidTemplates(Limits(output_bytes=100), compile_after=compile_after)
    assert liquid.render("{{ s }}", {"s": "é" * 50}, field="f") == "é" * 50
    with pytest.raises(RenderFailed) as info:
        liquid.render("{{ s }}", {"s": "é" * 51}, field="f")
    assert info.value.limit == "output_bytes"


def test_local_namespace_limit(compile_after: int) -> None:
    liquid = LiquidTemplates(Limits(local_namespace=10_000), compile_after=compile_after)
    source = (
        "{% assign a = s | append: 'a' %}{% assign b = s | append: 'b' %}{% assign c = s | append: 'c' %}"
    )
    with pytest.raises(RenderFailed) as info:
        liquid.render(source, {"s": "x" * 4_000}, field="body")
    assert info.value.limit == "local_namespace"
    assert str(info.value) == "body: line 1, column 68: assign/capture size limit of 10000 bytes reached"
    assert liquid.render(source + "ok", {"s": "x" * 1_000}, field="body") == "ok"


def test_source_size_limit_on_validate_and_render(compile_after: int) -> None:
    liquid = LiquidTemplates(Limits(source_bytes=100), compile_after=compile_after)
    liquid.validate("x" * 100, field="subject")
    with pytest.raises(TemplateInvalid) as invalid:
        liquid.validate("é" * 51, field="subject")
    assert str(invalid.value) == "subject: template is larger than 100 bytes"
    with pytest.raises(RenderFailed) as failed:
        liquid.render("x" * 101, {}, field="subject")
    assert str(failed.value) == "subject: template is larger than 100 bytes"


def test_deeply_nested_blocks_are_refused(liquid: LiquidTemplates) -> None:
    with pytest.raises(TemplateInvalid, match="block nesting limit reached"):
        liquid.validate("{% if true %}" * 40 + "{% endif %}" * 40, field="body")


# -- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "column", "detail"),
    [
        ("Hi\n\n  {% if %}x{% endif %}", 3, 6, "missing expression"),
        ("{{ customer.name | }}", 1, 1, "expected word, found end of expression"),
        ("a\n{% for x in y %}\nno end", 2, 4, "expected tag endfor, found end of expression"),
        ("a\nbc {% endif %}", 2, 7, "unexpected tag 'endif'"),
        ("{{ 'a' | no_such_filter }}", 1, 10, "unknown filter 'no_such_filter'"),
        ("{% no_such_tag %}", 1, 4, "unexpected tag 'no_such_tag'"),
        ('{% include "footer" %}', 1, 4, "unexpected tag 'include'"),
        ('{% render "footer" %}', 1, 4, "unexpected tag 'render'"),
        ("{{ a }\n", 1, 1, "expected '}}', found end of file"),
    ],
)
def test_validate_reports_line_and_column(
    liquid: LiquidTemplates, source: str, line: int, column: int, detail: str
) -> None:
    with pytest.raises(TemplateInvalid) as info:
        liquid.validate(source, field="body")
    err = info.value
    assert isinstance(err, InvalidInput)
    assert (err.field, err.line, err.column, err.detail) == ("body", line, column, detail)
    assert str(err) == f"body: line {line}, column {column}: {detail}"


def test_valid_template_passes_validation(liquid: LiquidTemplates) -> None:
    source = (
        "{% if customer.vip %}{{ customer.name | titlecase }}{% endif %}{% unsubscribe_url %}{{ snippets.x }}"
    )
    liquid.validate(source, field="body")
    assert (
        render(liquid, source, {"customer": {"vip": True, "name": "ann"}, "snippets": {"x": "!"}}) == "Ann!"
    )


def test_render_of_an_invalid_template_fails_with_its_position(liquid: LiquidTemplates) -> None:
    err = failure(liquid, "ok\n {% if %}")
    assert (err.line, err.column, err.detail) == (2, 5, "missing expression")


# -- caching -------------------------------------------------------------------------------------------------


def test_a_template_is_parsed_once_for_many_renders(liquid: LiquidTemplates) -> None:
    source = f"Hi {{{{ customer.name }}}} #{uuid.uuid4()}"
    before = liquid.parse_count
    outputs = {render(liquid, source, {"customer": {"name": f"n{i}"}}) for i in range(500)}
    assert len(outputs) == 500
    assert liquid.parse_count == before + 1


def test_cache_is_keyed_by_mode_and_shared_between_instances(
    liquid: LiquidTemplates, compile_after: int
) -> None:
    source = f"{{{{ x }}}} #{uuid.uuid4()}"
    before = liquid.parse_count
    liquid.validate(source, field="body")
    render(liquid, source, {"x": 1})
    assert liquid.parse_count == before + 1
    other = LiquidTemplates(compile_after=compile_after)
    assert other.render(source, {"x": 2}, field="body", html=True).startswith("2 #")
    assert liquid.parse_count == before + 2
    hits = liquid.cache_info().hits
    render(liquid, source, {"x": 3}, html=True)
    assert liquid.cache_info().hits == hits + 1
