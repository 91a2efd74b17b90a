"""The analysis registry: name, unit kind, version, dependencies and a function from unit to result.

An analysis function has the signature ``func(unit, upstream, config) -> AnalysisResult`` where
``upstream`` maps the names in ``requires`` to their (already computed) results for the same unit and
``config`` is the analysis' section of the service configuration (a plain dict, may be empty).
Functions raise on failure; the worker records the error as a result with status "error".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..units import UNIT_KINDS, WorkUnit

# Modules that register the built-in analyses. Missing modules are skipped so that an engine that has
# not landed yet does not stop the service.
BUILTIN_MODULES = (
    "xafs_stream.analyses.preprocess",
    "xafs_stream.analyses.quality",
    "xafs_stream.analyses.spm",
    "xafs_stream.analyses.bayes",
    "xafs_stream.analyses.imaging",
)


class SkipAnalysis(Exception):
    """Raised by an analysis that does not apply to this unit (e.g. no FEFF paths for the element).

    The worker records status "skipped" with the message, which is not an error.
    """


@dataclass
class AnalysisResult:
    """What an analysis returns.

    Attributes
    ----------
    arrays : name -> ndarray, written as Tiled arrays beside the run
    dims : name -> dimension names for ``arrays`` (e.g. ``("energy",)``)
    summary : flat name -> number/str/bool, written as queryable Tiled metadata
    params : parameters actually used (JSON-able)
    diagnostics : extra JSON-able detail (not for queries)
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    summary: dict[str, float | int | str | bool | None] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


AnalysisFunc = Callable[[WorkUnit, Mapping[str, AnalysisResult], Mapping[str, Any]], AnalysisResult]


@dataclass(frozen=True)
class Analysis:
    """A registered analysis."""

    name: str
    unit_kind: str
    version: str
    func: AnalysisFunc
    requires: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.unit_kind not in UNIT_KINDS:
            raise ValueError(f"analysis {self.name!r}: unit_kind must be one of {UNIT_KINDS}")


class Registry:
    """A set of analyses, ordered so that every analysis comes after those it requires."""

    def __init__(self) -> None:
        self._analyses: dict[str, Analysis] = {}

    def add(self, analysis: Analysis) -> Analysis:
        if analysis.name in self._analyses and self._analyses[analysis.name] != analysis:
            raise ValueError(f"analysis {analysis.name!r} is registered twice")
        self._analyses[analysis.name] = analysis
        return analysis

    def __contains__(self, name: str) -> bool:
        return name in self._analyses

    def __getitem__(self, name: str) -> Analysis:
        try:
            return self._analyses[name]
        except KeyError:
            raise KeyError(f"no analysis {name!r}; registered: {sorted(self._analyses)}") from None

    def names(self) -> list[str]:
        return list(self._analyses)

    def for_kind(self, unit_kind: str, only: set[str] | None = None) -> list[Analysis]:
        """Analyses for a unit kind in dependency order (``only`` restricts to names and their needs)."""
        wanted = [a for a in self._analyses.values() if a.unit_kind == unit_kind]
        if only is not None:
            keep: set[str] = set()
            stack = [n for n in only if n in self._analyses]
            while stack:
                name = stack.pop()
                if name not in keep:
                    keep.add(name)
                    stack.extend(self._analyses[name].requires)
            wanted = [a for a in wanted if a.name in keep]
        ordered: list[Analysis] = []
        done: set[str] = set()

        def visit(a: Analysis, path: tuple[str, ...]) -> None:
            if a.name in done:
                return
            if a.name in path:
                raise ValueError(f"analysis dependency cycle: {' -> '.join(path + (a.name,))}")
            for dep in a.requires:
                visit(self[dep], path + (a.name,))
            done.add(a.name)
            ordered.append(a)

        for a in wanted:
            visit(a, ())
        return ordered


_DEFAULT = Registry()


def register(
    name: str, unit_kind: str, version: str, *, requires: tuple[str, ...] = (), description: str = ""
) -> Callable[[AnalysisFunc], AnalysisFunc]:
    """Decorator: register ``func`` in the default registry under ``name``."""

    def wrap(func: AnalysisFunc) -> AnalysisFunc:
        _DEFAULT.add(Analysis(name, unit_kind, version, func, tuple(requires), description or (func.__doc__ or "")))
        return func

    return wrap


def default_registry() -> Registry:
    """The registry with every built-in analysis module imported."""
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return _DEFAULT
