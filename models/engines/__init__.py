"""Engines: what runs the model for the Generate path (the classroom scheduler, its slot cache and gathering)."""
