"""Scripts that make data, train and measure: run each from the repository root as `python -m scripts.NAME`."""
