"""An in-memory provider with the OpenAIProvider method names, for fast unit tests of the sweep engine's
bookkeeping. The behaviour that matters at OpenAI (real SDK, 404s, 429 storms) is tested against the sandbox."""

from __future__ import annotations

import datetime as dt


class FakeNotFound(Exception):
    status_code = 404


class FakeRateLimited(Exception):
    status_code = 429


class FakeProvider:
    def __init__(self):
        self.threads: dict[str, dict] = {}
        self.messages: dict[str, list[dict]] = {}
        self.runs: dict[str, list[dict]] = {}
        self.conversations: dict[str, dict] = {}
        self.items: dict[str, list[dict]] = {}
        self.vector_stores: dict[str, dict] = {}
        self.vector_store_files: dict[str, list[str]] = {}
        self.files: dict[str, dict] = {}
        self.containers: dict[str, dict] = {}
        self.deletes: list[str] = []
        self.fail_after_deletes: int | None = None
        self.rate_limit_next: int = 0
        self.retrieved_attachments: list[tuple[str, str]] = []

    def _maybe_rate_limit(self):
        if self.rate_limit_next:
            self.rate_limit_next -= 1
            raise FakeRateLimited("429")

    def _get(self, table: dict, key: str):
        self._maybe_rate_limit()
        if key not in table:
            raise FakeNotFound(key)
        return table[key]

    def _delete(self, table: dict, key: str):
        self._maybe_rate_limit()
        if key not in table:
            raise FakeNotFound(key)
        del table[key]
        self.deletes.append(key)
        if self.fail_after_deletes is not None and len(self.deletes) >= self.fail_after_deletes:
            self.fail_after_deletes = None
            raise KeyboardInterrupt("worker killed right after a delete")
        return "deleted"

    # threads / conversations
    def retrieve_thread(self, thread_id): return self._get(self.threads, thread_id)
    def list_thread_runs(self, thread_id): return list(self.runs.get(thread_id, []))
    def list_thread_messages(self, thread_id): return list(self.messages.get(thread_id, []))
    def delete_thread(self, thread_id): return self._delete(self.threads, thread_id)
    def retrieve_conversation(self, conversation_id): return self._get(self.conversations, conversation_id)
    def list_conversation_items(self, conversation_id): return list(self.items.get(conversation_id, []))
    def delete_conversation(self, conversation_id): return self._delete(self.conversations, conversation_id)

    # vector stores, files, containers
    def list_vector_stores(self): return list(self.vector_stores.values())
    def retrieve_vector_store(self, vs_id): return self._get(self.vector_stores, vs_id)
    def delete_vector_store(self, vs_id): return self._delete(self.vector_stores, vs_id)
    def list_vector_store_files(self, vs_id): return [{"id": f} for f in self.vector_store_files.get(vs_id, [])]

    def retrieve_vector_store_file(self, vs_id, file_id):
        self.retrieved_attachments.append((vs_id, file_id))
        return self._get({f: {"id": f, "vector_store_id": vs_id} for f in self.vector_store_files.get(vs_id, [])},
                         file_id)
    def list_files(self): return list(self.files.values())
    def retrieve_file(self, file_id): return self._get(self.files, file_id)
    def delete_file(self, file_id): return self._delete(self.files, file_id)
    def list_containers(self): return list(self.containers.values())
    def retrieve_container(self, container_id): return self._get(self.containers, container_id)
    def delete_container(self, container_id): return self._delete(self.containers, container_id)

    def add_thread(self, thread_id: str, created_at: dt.datetime):
        self.threads[thread_id] = {"id": thread_id, "object": "thread", "created_at": int(created_at.timestamp()),
                                   "metadata": {}, "tool_resources": {}}
