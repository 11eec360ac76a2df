"""Turning a rendered HTML email into a tracked one: click-tracked links and the open pixel.

Only the ``href`` of ``<a>`` tags is touched, with a pattern rather than an HTML parser, because
re-serialising parsed HTML would change markup that email clients are picky about. Links that are not
web pages (mailto:, tel:, #anchors), links Tidings already made (unsubscribe, preferences) and links
marked ``data-cio-no-track`` stay as they are.
"""

from __future__ import annotations

import html
import re

from tidings.tracking.links import DeliveryLinks

_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _rewrite_anchor(tag: str, links: DeliveryLinks) -> str:
    if "data-cio-no-track" in tag.lower():
        return tag
    match = _HREF.search(tag)
    if match is None:
        return tag
    raw = match.group(2) if match.group(2) is not None else match.group(3)
    url = html.unescape(raw).strip()
    if not url.lower().startswith(("http://", "https://")) or url.startswith(
        links.public_url.rstrip("/") + "/"
    ):
        return tag
    tracked = html.escape(links.tracked(url), quote=True)
    return f'{tag[: match.start()]}{match.group(1)}"{tracked}"{tag[match.end() :]}'


def track_html(source: str, links: DeliveryLinks, *, clicks: bool, opens: bool) -> str:
    if clicks:
        source = _ANCHOR.sub(lambda m: _rewrite_anchor(m.group(0), links), source)
    if opens:
        pixel = (
            f'<img src="{html.escape(links.open_pixel_url(), quote=True)}" width="1" height="1" alt="" '
            'style="display:block;height:1px;width:1px;border:0" />'
        )
        ends = list(_BODY_END.finditer(source))
        at = ends[-1].start() if ends else len(source)
        source = f"{source[:at]}{pixel}{source[at:]}"
    return source
