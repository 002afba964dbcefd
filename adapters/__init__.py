"""Everything that touches a third-party library, installed as ``xai_bridge.adapters`` (never as ``adapters``).

``models`` wraps the user's models in the :class:`xai_bridge.models.Model`
protocol; ``methods`` holds one module per explainability library (its method
specs beside their code); ``captioners`` turns captioning models and APIs into
caption sources; ``_torch`` holds the torch helpers they share.
"""
