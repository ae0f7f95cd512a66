"""Asynchronous Perception Machine (APM): overfit one image's teacher features, watch GLOM's islands form."""

__version__ = "0.5.0"  # kept equal to pyproject.toml's (a test checks); part of every run's key in the app's run cache
