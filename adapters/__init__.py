"""Adapters, installed as ``xai_bridge.adapters`` (never as a top-level ``adapters``).

``xai_bridge.adapters.models`` wraps user models in the :class:`xai_bridge.models.Model`
protocol; ``xai_bridge.adapters.backends`` holds one small module per library.
"""
