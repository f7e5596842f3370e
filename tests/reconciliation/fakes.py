"""A stand-in for the provider wrapper's admin methods, for unit tests of the reconciliation service that do
not need HTTP (the sandbox tests cover the real SDK path). It returns buckets shaped like OpenAI's."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from apps.core.timeutils import day_start, to_unix


class FakeAdminProvider:
    def __init__(self):
        self.costs_rows = defaultdict(list)        # day -> [(project, line_item, amount float)]
        self.completion_rows = defaultdict(list)   # day -> [(project, model, input, cached, output)]
        self.ci_rows = defaultdict(list)
        self.fs_rows = defaultdict(list)
        self.calls: list[str] = []
        self.fail_with: Exception | None = None

    def cost(self, day: dt.date, line_item: str, amount: float, project: str = "proj_default"):
        self.costs_rows[day].append((project, line_item, amount))
        return self

    def completions(self, day, model, input_tokens, cached, output, project="proj_default"):
        self.completion_rows[day].append((project, model, input_tokens, cached, output))
        return self

    def _buckets(self, start_time, end_time, rows, result):
        buckets = []
        day = dt.datetime.fromtimestamp(start_time, dt.UTC).date()
        while to_unix(day_start(day)) < end_time:
            start = to_unix(day_start(day))
            buckets.append({"object": "bucket", "start_time": start, "end_time": start + 86400,
                            "results": [result(row) for row in rows.get(day, [])]})
            day += dt.timedelta(days=1)
        return buckets

    def costs(self, start_time, end_time, group_by=None, project_ids=None, **kwargs):
        self.calls.append("costs")
        if self.fail_with:
            raise self.fail_with
        return self._buckets(start_time, end_time, self.costs_rows, lambda r: {
            "object": "organization.costs.result", "project_id": r[0], "line_item": r[1],
            "amount": {"value": r[2], "currency": "usd"}})

    def usage_completions(self, start_time, end_time, group_by=None, bucket_width="1d", **kwargs):
        self.calls.append("completions")
        return self._buckets(start_time, end_time, self.completion_rows, lambda r: {
            "object": "organization.usage.completions.result", "project_id": r[0], "model": r[1],
            "input_tokens": r[2], "input_cached_tokens": r[3], "output_tokens": r[4], "num_model_requests": 1})

    def usage_code_interpreter_sessions(self, start_time, end_time, group_by=None, bucket_width="1d", **kwargs):
        self.calls.append("code_interpreter")
        return self._buckets(start_time, end_time, self.ci_rows, lambda r: {"project_id": r[0], "num_sessions": r[1]})

    def usage_file_search_calls(self, start_time, end_time, group_by=None, bucket_width="1d", **kwargs):
        self.calls.append("file_search")
        return self._buckets(start_time, end_time, self.fs_rows, lambda r: {"project_id": r[0], "num_requests": r[1]})

    def usage_vector_stores(self, start_time, end_time, group_by=None, bucket_width="1d", **kwargs):
        self.calls.append("vector_stores")
        return self._buckets(start_time, end_time, {}, lambda r: r)
