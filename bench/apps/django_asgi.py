"""The Django project of the tests (tests/apps/djangoproj, a JSON view at /) over ASGI, for the bench."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "apps", "djangoproj"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproj.settings")

from djangoproj.asgi import application as app  # noqa: E402

__all__ = ["app"]
