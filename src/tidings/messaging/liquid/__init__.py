"""Customer.io-compatible Liquid: validate templates when saved, render them per delivery.

Built on python-liquid, following Customer.io's "latest" engine (LiquidJS semantics) where its two
engines differ. One environment per output mode (HTML or text) per ``Limits``, shared by every
``LiquidTemplates``; parsed templates are cached by (source, mode), so rendering one template for many
people parses it once. A template rendered again is compiled to a Python function (``compiled``),
which renders it about twice as fast as python-liquid's tree walker, with the same results and failures.

Context: the caller passes ``customer``, ``event``, ``trigger``, ``journey``, ``objects``, ``snippets``,
``campaign``, ``message``, ``layout``, ``delivery_id`` and ``content`` (the layout insertion point). The
mapping is read, never copied deeply or modified.

Undefined variables (Customer.io fails a delivery rather than send a blank):

- Referencing an undefined variable fails the render with ``RenderFailed`` naming the path as written
  (``customer.plan.name is undefined``) and its line and column. That covers output, ``assign``, ``for``,
  filter inputs and filter arguments; ``{{ customer.x | size }}`` fails too, as in LiquidJS.
- Conditions never fail: ``if``, ``elsif``, ``unless``, ``case`` and ``when`` treat an undefined value as
  nil, so ``{% if customer.x %}``, ``{% if customer.x.size > 0 %}`` and ``{% if customer.x contains "a" %}``
  are false. Undefined, nil and false equal ``blank`` (``{% if customer.x != blank %}`` is the documented
  Customer.io guard); nothing undefined equals ``empty``, which only matches "", [] and {}.
- A filter chain that starts with ``default`` (``{{ customer.x | default: "there" }}``) never fails on an
  undefined input; ``default`` replaces nil, false, "" and empty arrays, not 0.
- ``{{ unsubscribe_url }}`` as a variable renders empty, as in Customer.io (the tag is the real thing).

Escaping: ``html=True`` (email bodies, AMP) HTML-escapes every ``{{ }}`` output with markupsafe;
``html=False`` (subjects, plain text, SMS, push, webhook bodies) never escapes. Trusted HTML is not escaped
again: snippets, ``content``, ``render_liquid`` output, text written in the template itself, and the output
of ``escape`` / ``xml_escape`` (so ``| escape`` does not double-escape). python-liquid's ``safe`` filter is
kept as the explicit way to output an HTML-bearing attribute unescaped.

Snippets: ``{{ snippets.footer }}`` and ``{{ snippets["footer"] }}`` render the snippet's Liquid against
the message's context but with its own assigns (Customer.io: snippet scope is isolated); values that are
not strings (already-parsed JSON) are returned as they are.

Limits (``Limits``): total loop iterations per render (including nested snippets, render_liquid, and
items evaluated by ``*_exp`` filters; a nested render costs one), output bytes, nesting depth of snippets
and render_liquid, bytes held by assign/capture, and source size. A hostile template fails fast with
``RenderFailed`` whose ``limit`` names the field hit. Range literals longer than the loop limit fail.

Customer.io's tags are described in ``tags``, its filters in ``filters``, date handling in ``dates``.
"""

from tidings.messaging.liquid.engine import Limits, LiquidTemplates
from tidings.messaging.liquid.errors import RenderFailed, TemplateInvalid
from tidings.messaging.liquid.runtime import Links

__all__ = ["Limits", "Links", "LiquidTemplates", "RenderFailed", "TemplateInvalid"]
