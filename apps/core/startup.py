"""What a web process does once, after Django is set up and before it serves a request."""

from __future__ import annotations

import gc
from importlib import import_module

from django.conf import settings


def load_views_and_freeze_startup_objects() -> int:
    """Import the URLconf, and with it every view (Django loads it lazily, at the first request), then move
    every object startup made into the garbage collector's permanent generation. Returns how many objects
    are frozen.

    Why: the openai SDK's pydantic models, psycopg and Django leave ~130,000 tracked objects, and CPython's
    full (generation 2) collection walked them all: 55–85 ms on the benchmark machine, once every ten or so
    requests of a page that makes many objects (a p95 spike on every page, issue #9). Frozen, a full
    collection walks only what requests made: ~4 ms. Startup objects live as long as the process anyway."""
    import_module(settings.ROOT_URLCONF)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
