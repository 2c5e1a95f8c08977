"""Gradio layout only: one module per tab. Handlers parse widgets, call one models/ function, format."""
