"""The MLModel operator: typed spec, pure manifest builders, thin kopf handlers."""

__version__ = "0.1.0"
