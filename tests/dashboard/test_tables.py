"""A table's rows are written in Python (Table.body_html) as the table template wrote them cell by cell."""

from __future__ import annotations

from decimal import Decimal

from django.template import Context, Template

from apps.dashboard.tables import Column, Table

# The markup the table template wrote for each row before body_html (session 20's _table.html), kept here to
# compare: a row header (wrapping when its column wraps), then cells with their classes, linked when they have
# a URL.
_TEMPLATE_ROWS = Template(
    '{% for row in table.html_rows %}<tr>\n          {% for cell in row %}{% if forloop.first %}<th scope="row"'
    '{% if cell.wrap %} class="wrap"{% endif %}>{% else %}<td{% if cell.css_class %} class="{{ cell.css_class }}"'
    '{% endif %}>{% endif %}{% if cell.url %}<a href="{{ cell.url }}">{% endif %}{{ cell.html }}{% if cell.url %}'
    '</a>{% endif %}{% if forloop.first %}</th>{% else %}</td>{% endif %}{% endfor %}\n        </tr>{% endfor %}')


def test_body_html_is_the_markup_the_template_wrote(db):
    rows = [
        {"name": "Tom & Jerry <b>", "cost": Decimal("1.5"), "note": "a long note", "id": "resp_a\"b", "link": "/x?a=1&b=<2>"},
        {"name": "", "cost": None, "note": "", "id": "resp_2", "link": None},
    ]
    for wrap_first in (False, True):
        table = Table(name="t", title="T", rows=rows, columns=[
            Column("name", "Name", link=lambda row: row["link"], wrap=wrap_first),
            Column("cost", "Cost", "money"),
            Column("note", "Note", "longtext"),
            Column("id", "Run", "code", link=lambda row: row["link"]),
        ])
        assert str(table.body_html) == _TEMPLATE_ROWS.render(Context({"table": table}))
    assert '<a href="/x?a=1&amp;b=&lt;2&gt;">' in table.body_html and "Tom &amp; Jerry &lt;b&gt;" in table.body_html
