"""Backends: one small module per library, imported lazily through the registry."""
