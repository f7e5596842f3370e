"""Tables described once, rendered as HTML (one page) and exported as CSV (every row, same filters).

A page's view lists its tables by name; `?format=csv&table=<name>` on the same URL downloads that table,
so an export is always scoped and filtered exactly like what the viewer sees."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.template import Context
from django.template.base import render_value_in_context
from django.template.defaultfilters import date as date_filter
from django.template.defaultfilters import floatformat
from django.utils.functional import cached_property
from django.utils.html import conditional_escape, strip_spaces_between_tags
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import template_localtime

from apps.core.exports import csv_value
from apps.core.money import usd_string

from .templatetags.dashboard import bar_width, budget_pct, price, spaced, sparkline, status_class, tokens, usd


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    # text | code | int | number | money | price | percent | datetime | date | status | bool | sparkline |
    # longtext | idtext (an IdInText: longtext with one OpenAI id in it, shortened like a code cell) |
    # acknowledge (an alert's pk: its Acknowledge button)
    kind: str = "text"
    value: Callable[[Any], Any] | None = None
    link: Callable[[Any], str | None] | None = None
    csv: bool = True
    page: bool = True  # False: a CSV-only column (the page shows it merged into another)
    # The CSV cell when it is not the page's (the page's words around a value, the CSV the value itself), and
    # the kind it is written as.
    csv_get: Callable[[Any], Any] | None = None
    csv_kind: str | None = None
    sort: str = ""  # the ?sort= value that orders by this column, if sortable
    numeric: bool = False
    # May wrap at its spaces when the table is tight (cells do not by default): for short values with words
    # after them ("$2.50 (input price)"), which need no minimum width of their own as longtext has.
    wrap: bool = False

    def get(self, row) -> Any:
        if self.value is not None:
            return self.value(row)
        if isinstance(row, dict):
            return row.get(self.key)
        return getattr(row, self.key, None)

    @property
    def align_right(self) -> bool:
        return self.numeric or self.kind in {"int", "money", "exact_money", "percent", "price", "number"}


@dataclass(frozen=True)
class IdInText:
    """Prose naming one OpenAI id ("Run resp_… failed after spending $0.01"), the id given apart (an alert's
    data["run"]), not found by pattern: the page shortens it as it does ids in code cells, full id in the
    tooltip, where a 52-character id otherwise broke mid-id across lines of a narrow cell. An id the text does
    not contain leaves the text whole."""

    text: str
    openai_id: str = ""

    @property
    def parts(self) -> tuple[str, str, str]:
        """(before, id, after); the id empty when the text does not contain it."""
        if self.openai_id and self.openai_id in self.text:
            return self.text.partition(self.openai_id)
        return self.text, "", ""

    def __str__(self) -> str:
        return self.text


# What `{{ value }}` does in a template (local time, localized numbers, escaped), for cells made here.
_TEMPLATE_CONTEXT = Context()


def _text(value) -> str:
    return render_value_in_context(value, _TEMPLATE_CONTEXT)


def _day(moment) -> str:
    """A day as the tables write it, of a value already in local time (template_localtime)."""
    return conditional_escape(date_filter(moment, "M j, Y"))


def _percent_html(value) -> str:
    level = " meter-over" if value >= 100 else " meter-warn" if value >= 80 else ""
    return (f'<span class="meter"><span class="meter-bar{level}" style="width: {_text(bar_width(value))}%"></span>'
            f"</span> {_text(budget_pct(value))}")


def _datetime_html(value) -> str:
    moment = template_localtime(value)
    return (f'<time datetime="{conditional_escape(date_filter(moment, "c"))}"><span class="day">{_day(moment)}</span> '
            f'{conditional_escape(date_filter(moment, "H:i"))}</time>')


def _date_html(value) -> str:
    moment = template_localtime(value)
    return f'<time datetime="{conditional_escape(date_filter(moment, "Y-m-d"))}">{_day(moment)}</time>'


def _id_in_text_html(value) -> str:
    before, openai_id, after = getattr(value, "parts", ("", "", ""))
    code = f'<code class="id-cell" title="{_text(openai_id)}">{_text(openai_id)}</code>' if openai_id else ""
    return f'<span class="wrap-text">{_text(before)}{code}{_text(after)}</span>'


_CELL_FORMATS: dict[str, Callable[[Any], str]] = {
    "money": lambda value: _text(usd(value)),
    "exact_money": lambda value: _text(f"${usd_string(value)}"),  # the ledger's amount, unrounded
    "price": lambda value: _text(price(value)),
    "int": lambda value: _text(tokens(value)),
    "number": lambda value: _text(floatformat(value, "-2")),
    "percent": _percent_html,
    "datetime": _datetime_html,
    "date": _date_html,
    "status": lambda value: f'<span class="badge {_text(status_class(value))}">{_text(spaced(value))}</span>',
    "bool": lambda value: "yes" if value else '<span class="muted">no</span>',
    "code": lambda value: f'<code class="id-cell" title="{_text(value)}">{_text(value)}</code>',
    "sparkline": lambda value: ('<svg class="sparkline" width="120" height="28" viewBox="0 0 120 28" role="img" '
                                f'aria-label="daily cost trend"><polyline points="{_text(sparkline(value))}" '
                                'fill="none" stroke="currentColor" stroke-width="1.5"/></svg>'),
    "longtext": lambda value: f'<span class="wrap-text">{_text(value)}</span>',
    "idtext": _id_in_text_html,
    # An alert's pk: a button of the page's one acknowledge form (it holds the CSRF token; `form=` ties the
    # button to it from inside the table).
    "acknowledge": lambda pk: (f'<button type="submit" class="button button-small" form="acknowledge-alert" '
                               f'name="alert" value="{_text(pk)}">Acknowledge</button>'),
}


@dataclass
class Cell:
    value: Any
    kind: str
    url: str | None = None
    align_right: bool = False
    wrap: bool = False

    @property
    def html(self) -> SafeString:
        """The cell's content by its kind (money, dates, badges, ids...). Made here, not by a chain of {% if %}
        in the table template: that chain cost the runs and audit pages ~0.4 ms a row (issue #9)."""
        value = self.value
        if value is None or value == "":
            return mark_safe('<span class="muted">—</span>')
        format_value = _CELL_FORMATS.get(self.kind, _text)
        # As the template's {% spaceless %} around a cell did: no outer whitespace, none between tags.
        return mark_safe(strip_spaces_between_tags(format_value(value).strip()))

    @property
    def css_class(self) -> str:
        """The cell's classes: right-aligned numbers; wrapping text (longtext is left-aligned prose)."""
        classes = ["num"] if self.align_right else []
        if self.wrap or (self.kind in ("longtext", "idtext") and not self.align_right):
            classes.append("wrap")
        return " ".join(classes)


class CappedPaginator(Paginator):
    """Counts at most `cap` + 1 rows (COUNT over a LIMITed subquery), so a page over millions of runs does not
    scan them all to print "1,234,567 rows"; past the cap the count reads "10,000+" (issue #9)."""

    def __init__(self, *args, cap: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.cap = cap
        self.capped = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if hasattr(rows, "query"):
            found = rows.order_by()[: self.cap + 1].count()
        else:
            found = len(rows)
        self.capped = found > self.cap
        return min(found, self.cap)


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: Iterable  # a queryset or a list; not evaluated until rendered or exported
    paginate_by: int | None = None
    page_param: str = "page"
    empty: str = "Nothing here yet."
    caption: str = ""
    sort: str = ""  # the current ?sort= value, when this table's columns are sortable
    count_cap: int | None = None  # count at most this many rows (tables over the run ledger)
    page: Any = field(default=None, init=False)
    _query: Any = field(default=None, init=False, repr=False)
    _path: str = field(default="", init=False, repr=False)
    _rows_cache: list | None = field(default=None, init=False, repr=False)

    def paginate(self, request, *, path: str, drop: Iterable[str] = ()) -> None:
        """Evaluate one page of rows for HTML (the whole table when not paginated). The table's links go to
        `path` (the page's, DashboardView.page_path) and keep the request's query parameters, less those named
        in `drop` (values the page ignored)."""
        self._path = path
        self._query = request.GET.copy()
        for name in drop:
            self._query.pop(name, None)
        if self.paginate_by:
            paginator = (CappedPaginator(self.rows, self.paginate_by, cap=self.count_cap) if self.count_cap
                         else Paginator(self.rows, self.paginate_by))
            self.page = paginator.get_page(request.GET.get(self.page_param))
        else:
            self.page = None

    def _with(self, **changes) -> str:
        query = self._query.copy()
        for key, value in changes.items():
            query.pop(key, None)
            if value is not None:
                query[key] = value
        return f"{self._path}?{query.urlencode()}"

    @property
    def csv_query(self) -> str:
        return self._with(format="csv", table=self.name, **{self.page_param: None})

    @property
    def previous_query(self) -> str:
        return self._with(**{self.page_param: self.page.previous_page_number()}) if self.page.has_previous() else ""

    @property
    def next_query(self) -> str:
        return self._with(**{self.page_param: self.page.next_page_number()}) if self.page.has_next() else ""

    def sort_query(self, sort: str) -> str:
        return self._with(sort=sort, **{self.page_param: None})

    @property
    def headers(self) -> list[dict]:
        """Each column's header, with a link that sorts by it (flipping direction when already sorted)."""
        headers = []
        for column in self.page_columns:
            header = {"column": column, "href": "", "aria_sort": ""}
            if column.sort and self.sort:
                base = column.sort.lstrip("-")
                if self.sort.lstrip("-") == base:
                    header["aria_sort"] = "descending" if self.sort.startswith("-") else "ascending"
                    header["href"] = self.sort_query(base if self.sort.startswith("-") else f"-{base}")
                else:
                    header["href"] = self.sort_query(column.sort)
            headers.append(header)
        return headers

    @property
    def page_columns(self) -> list[Column]:
        return [column for column in self.columns if column.page]

    @property
    def page_rows(self) -> list:
        if self._rows_cache is None:
            self._rows_cache = list(self.page.object_list if self.page is not None else self.rows)
        return self._rows_cache

    @property
    def html_rows(self) -> list[list[Cell]]:
        rows = []
        for row in self.page_rows:
            rows.append([
                Cell(value=column.get(row), kind=column.kind, url=column.link(row) if column.link else None,
                     align_right=column.align_right, wrap=column.wrap)
                for column in self.page_columns
            ])
        return rows

    @property
    def body_html(self) -> SafeString:
        """The page's rows as the table template wrote them cell by cell: a row header, then cells with their
        classes, each linked when it has a URL. Written by the template, its ~7 {% if %} a cell were ~20 ms of
        the biggest tenant's page at 10M runs (issue #9)."""
        rows = []
        for cells in self.html_rows:
            parts = []
            for index, cell in enumerate(cells):
                content = f'<a href="{conditional_escape(cell.url)}">{cell.html}</a>' if cell.url else cell.html
                if index == 0:
                    wrap = ' class="wrap"' if cell.wrap else ""
                    parts.append(f'<th scope="row"{wrap}>{content}</th>')
                else:
                    css = cell.css_class
                    parts.append(f'<td class="{conditional_escape(css)}">{content}</td>' if css else f"<td>{content}</td>")
            rows.append("<tr>\n          " + "".join(parts) + "\n        </tr>")
        return mark_safe("".join(rows))  # cell.html is safe; the URL and classes went through conditional_escape

    def csv_rows(self) -> Iterator[list[str]]:
        columns = [column for column in self.columns if column.csv]
        yield [column.header for column in columns]
        rows = self.rows.iterator(chunk_size=2000) if isinstance(self.rows, QuerySet) else self.rows
        for row in rows:
            yield [csv_value(column.csv_get(row) if column.csv_get else column.get(row), column.csv_kind or column.kind)
                   for column in columns]


class _Echo:
    def write(self, value):
        return value


def csv_response(table: Table, *, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in table.csv_rows()), content_type="text/csv; charset=utf-8")
    # Names carry ids and slugs that ingest recorded: only characters safe in a quoted header value.
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename)
    response["Content-Disposition"] = f'attachment; filename="{safe}"'
    response["Cache-Control"] = "no-store"
    return response
