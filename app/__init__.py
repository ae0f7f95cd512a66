"""The Gradio UI of the APM islands explorer. Only wiring: the work is done by the `apm` library."""
