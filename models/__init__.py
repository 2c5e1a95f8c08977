"""Model handlers and algorithms for LM Lab. Nothing in this package imports Gradio."""
