"""Asynchronous Perception Machine (APM): overfit one image's teacher features, watch GLOM's islands form."""
