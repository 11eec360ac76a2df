"""Compiled Liquid renders the way python-liquid's tree walker does: the same text, or the same failure
(message, variable, line, column, limit), for the statements the compiler turns into Python and for the
ones it hands back to the tree walker in between."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tidings.messaging.liquid import Limits, LiquidTemplates, RenderFailed
from tidings.messaging.liquid.compiled import CompiledTemplate
from tidings.messaging.liquid.engine import COMPILE_SOURCE_LIMIT

COMPILED = LiquidTemplates(compile_after=1)
TREE = LiquidTemplates(compile_after=0)

CONTEXT: dict[str, Any] = {
    "customer": {
        "first_name": "Ana <&>",
        "plan": "pro",
        "city": "Porto",
        "age": 41,
        "score": 2.5,
        "vip": True,
        "nothing": None,
        "tags": ["a", "b<", "c"],
        "address": {"street": "Rua 1", "size": "XL"},
    },
    "trigger": {
        "order_id": 1042,
        "total": 91.456,
        "items": [
            {"name": "Shirt & tie", "price": 49.0, "quantity": 2, "sku": "sh-1"},
            {"name": "Tote", "price": 19.5, "quantity": 1, "sku": "to-2"},
            {"name": "Socks", "price": 12.9, "quantity": 3, "sku": "so-3"},
        ],
        "matrix": [[1, 2], [3, 4]],
        "empty": [],
        "key": "city",
    },
    "snippets": {
        "footer": "<p>Footer &amp; co</p>",
        "hello": "Hi {{ customer.first_name }}",
        "again": "x{{ snippets.again }}",
    },
}

SOURCES = [
    "plain text only {",
    "{{ customer.first_name }} from {{ customer.city }}",
    "{{ customer.age }} {{ customer.score }} {{ customer.vip }} [{{ customer.nothing }}] {{ customer.tags }}",
    "{{ customer.tags.size }} {{ customer.tags.first }} {{ customer.tags.last }} {{ customer.tags[1] }}",
    "{{ customer.address.size }} {{ customer.address.street }} {{ customer[trigger.key] }}",
    '{{ customer.missing | default: "there" }} {{ customer.nothing | default: 0 }}',
    '{{ trigger.total | round: 2 }} {{ trigger.total | times: 2 | plus: 1 }} {{ "x<y" | upcase }}',
    "{{ customer.first_name | escape }} {{ customer.first_name | safe }} {{ customer.first_name | size }}",
    '{{ customer.tags | join: ", " }} {{ customer.first_name | truncate: 5, "…" }}',
    "{% for item in trigger.items %}{{ forloop.index }}/{{ forloop.length }} {{ item.name }}"
    "{% if forloop.last %}.{% else %}, {% endif %}{% endfor %}",
    "{% for item in trigger.items reversed limit: 2 %}{{ item.sku | upcase }}{% endfor %}",
    "{% for item in trigger.items offset: 1 %}{{ item.name }}{% endfor %}",
    "{% for item in trigger.empty %}never{% else %}nothing{% endfor %}",
    "{% for item in trigger.items %}{% if item.quantity > 1 %}{% continue %}{% endif %}{{ item.name }}"
    "{% endfor %}",
    "{% for item in trigger.items %}{% if forloop.index == 2 %}{% break %}{% endif %}{{ item.name }}"
    "{% endfor %}",
    "{% for row in trigger.matrix %}{% for cell in row %}{{ forloop.parentloop.index }}.{{ cell }} "
    "{% endfor %}{% endfor %}",
    "{% for i in (1..3) %}{{ i }}{% endfor %}",
    "{% assign n = trigger.items.size %}{% for item in trigger.items %}{% assign n = n | minus: 1 %}"
    "{% endfor %}{{ n }}",
    "{% capture c %}{{ customer.first_name }}!{% endcapture %}{{ c }} {{ c | size }}",
    '{% if customer.plan == "pro" %}pro{% elsif customer.plan == "free" %}free{% else %}other{% endif %}',
    "{% if customer.missing %}yes{% elsif customer.missing.deeper %}deep{% else %}no{% endif %}",
    "{% if customer.nothing == blank %}blank{% endif %}{% unless customer.vip %}x{% endunless %}",
    '{% case customer.plan %}{% when "pro" %}P{% when "free" %}F{% else %}?{% endcase %}',
    "{% if true %}   {% assign quiet = 1 %}   {% endif %}[{{ quiet }}]",
    "{{ snippets.footer }} {{ snippets.hello }} {{ snippets['hello'] }}",
    "{% render_liquid snippets.hello %} {% echo customer.city | upcase %}",
    "{% for item in trigger.items %}{% for tag in customer.tags %}{% for c in (1..2) %}{% for d in (1..1) %}"
    "{% for e in (1..1) %}{% for f in (1..1) %}{{ item.sku }}{{ tag }}{{ c }}{% endfor %}{% endfor %}"
    "{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
    # Names bound in front of the globals: assigns, loop variables (also one called forloop), counters,
    # render_liquid (which may assign anything), the template's own namespace.
    "{{ customer.city }}{% assign customer = trigger %}{{ customer.order_id }}",
    "{% for customer in trigger.items %}{{ customer.name }}{% endfor %}{{ customer.city }}",
    "{% for item in trigger.items %}{% for item in customer.tags %}{{ item }}{% endfor %}{{ item.sku }}"
    "{% endfor %}",
    "{% for forloop in customer.tags %}{{ forloop }}{% endfor %}",
    "{% increment customer %}{{ customer.city }} {% decrement n %}{{ n }} {{ partial }}",
    "{% render_liquid snippets.assigning %}{{ customer }}",
    "{% capture trigger %}captured{% endcapture %}{{ trigger }}",
    "{% if customer.vip %}{% assign plan = customer.plan %}{% endif %}{{ plan | upcase }}",
    # Failures: undefined paths (top level, in a loop, in a filter argument), filter errors, a break
    # outside a loop, a failing snippet.
    "ok {{ customer.plan.name }}",
    "{% for item in trigger.items %}\n  {{ item.colour }}{% endfor %}",
    "{{ trigger.total | plus: customer.missing }}",
    '{{ trigger.total | divided_by: 0 }} {{ "a" | date: "%Q%" | nope_not_reached }}',
    "{{ customer.tags | map: 'x' | first | upcase }}",
    "a{% break %}b",
    "{{ snippets.nope }}",
]


def outcome(liquid: LiquidTemplates, source: str, *, html: bool, limits: Limits | None = None) -> object:
    if limits is not None:
        liquid = LiquidTemplates(limits, compile_after=1 if liquid is COMPILED else 0)
    try:
        return liquid.render(source, CONTEXT, field="body", html=html)
    except RenderFailed as err:
        return ("failed", str(err), err.variable, err.line, err.column, err.limit)


@pytest.mark.parametrize("html", [True, False], ids=["html", "text"])
@pytest.mark.parametrize("source", SOURCES)
def test_compiled_renders_match_the_tree_walker(source: str, html: bool) -> None:
    expected = outcome(TREE, source, html=html)
    assert outcome(COMPILED, source, html=html) == expected


@pytest.mark.parametrize(
    ("limits", "source"),
    [
        (Limits(output_bytes=60), "{% for item in trigger.items %}{{ item.name }} and more text{% endfor %}"),
        (Limits(output_bytes=30), "{{ customer.tags | join: '------------------------' }}"),
        (
            Limits(loop_iterations=5),
            "{% for a in (1..3) %}{% for b in (1..3) %}{{ b }}{% endfor %}{% endfor %}",
        ),
        (Limits(depth=3), "{% render_liquid snippets.hello %}{{ snippets.again }}"),
        (
            Limits(local_namespace=200),
            "{% for i in (1..50) %}{% assign s = s | append: 'xxxxxxxx' %}{% endfor %}",
        ),
    ],
)
def test_limits_fail_the_same_way(limits: Limits, source: str) -> None:
    expected = outcome(TREE, source, html=True, limits=limits)
    assert isinstance(expected, tuple), expected
    assert expected[0] == "failed"
    assert outcome(COMPILED, source, html=True, limits=limits) == expected


def test_templates_are_compiled_and_the_expected_text_comes_out() -> None:
    source = SOURCES[9]
    assert COMPILED.render(source, CONTEXT, field="body", html=True) == (
        "1/3 Shirt &amp; tie, 2/3 Tote, 3/3 Socks."
    )
    template = COMPILED._engine.template(source, True)
    assert isinstance(template, CompiledTemplate)
    assert template.compiled


def test_a_template_is_compiled_at_its_second_render_unless_it_is_very_large() -> None:
    liquid = LiquidTemplates()  # the defaults
    source = "{{ customer.city }} " + uuid.uuid4().hex
    liquid.validate(source, field="body")
    assert not liquid._engine.template(source, False).compiled
    assert liquid.render(source, CONTEXT, field="body").startswith("Porto ")
    assert not liquid._engine.template(source, False).compiled
    assert liquid.render(source, CONTEXT, field="body").startswith("Porto ")
    assert liquid._engine.template(source, False).compiled
    large = "{{ customer.city }}" + "x" * COMPILE_SOURCE_LIMIT
    for _ in range(3):
        assert liquid.render(large, CONTEXT, field="body").startswith("Portox")
    assert not liquid._engine.template(large, False).compiled


def test_nesting_python_cannot_compile_falls_back_to_the_tree_walker() -> None:
    # 30 nested ifs compile; Python's own limit on nested blocks is reached by loops, which past a
    # depth are handed to the tree walker, so every template the parser accepts renders.
    loops = "".join(f"{{% for x{i} in (1..1) %}}" for i in range(25)) + "{{ x24 }}" + "{% endfor %}" * 25
    ifs = "{% if true %}" * 29 + "deep" + "{% endif %}" * 29
    assert COMPILED.render(loops, {}, field="body") == "1"
    assert COMPILED.render(ifs, {}, field="body") == "deep"
    assert COMPILED._engine.template(ifs, False).compiled
