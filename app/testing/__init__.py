"""Driving the app from code, for the tests and the measuring scripts: `harness` calls the page's handlers in this
process (no server, no browser); `browser` starts `python app.py` on a free port and opens headless Chromium.
No module of the app imports this package."""
