"""Serves vendor/plotly.min.js from the installed plotly package (no CDN, no vendored copy to update)."""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

_PLOTLY_DIR = Path(plotly.__file__).parent / "package_data"
_PUBLIC_PATH = "vendor/plotly.min.js"


class PlotlyJsFinder(BaseFinder):
    def __init__(self, *args, **kwargs):
        self.storage = FileSystemStorage(location=str(_PLOTLY_DIR))
        self.storage.prefix = "vendor"

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        match = str(_PLOTLY_DIR / "plotly.min.js") if path == _PUBLIC_PATH else None
        if find_all:
            return [match] if match else []
        return match

    def list(self, ignore_patterns):
        yield "plotly.min.js", self.storage
