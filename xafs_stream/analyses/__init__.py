"""Analyses: thin adapters from a :class:`~xafs_stream.core.WorkUnit` to a pure engine and back.

Each analysis module registers itself with :func:`~xafs_stream.analyses.registry.register`;
:func:`~xafs_stream.analyses.registry.default_registry` imports the built-in modules.
"""

from .registry import Analysis, AnalysisResult, Registry, default_registry, register

__all__ = ["Analysis", "AnalysisResult", "Registry", "default_registry", "register"]
