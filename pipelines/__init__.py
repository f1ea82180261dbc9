"""Pipelines: short recipes that compose the library's stages (one module per pipeline)."""
