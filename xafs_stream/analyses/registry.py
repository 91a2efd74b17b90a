"""The analysis registry: name, unit kind, version, dependencies, settings and a function from unit to result.

An analysis function has the signature ``func(unit, upstream, config) -> AnalysisResult`` where
``upstream`` maps the names in ``requires`` to their (already computed) results for the same unit and
``config`` is the analysis' section of the service configuration (``[analysis."<name>"]``, a plain dict,
may be empty). Functions raise on failure; the worker records the error as a result with status "error".

An analysis declares the setting names it accepts (``settings``) and may give a ``check`` of their values;
:meth:`Registry.check_config` applies both to a whole configuration when ``serve`` and ``worker`` start, so
a misspelt setting or analysis name stops startup instead of failing every result later.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping


from ..config import ConfigError
from ..core import UNIT_KINDS, AnalysisResult, WorkUnit
from ..engines.errors import InputError

#: cost classes: with [broker] lanes, each is a queue of its own, so fast results never wait behind slow fits
COSTS = ("fast", "slow")

# Modules that register the built-in analyses.
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
    settings: tuple[str, ...] = ()  # the setting names its ``[analysis."<name>"]`` table may hold
    check: Callable[[Mapping[str, Any]], Any] | None = None  # raises InputError for a bad value
    cost: str = "fast"  # "fast" (milliseconds: normalisation, quality, tiles) or "slow" (seconds: fits)

    def __post_init__(self) -> None:
        if self.unit_kind not in UNIT_KINDS:
            raise ValueError(f"analysis {self.name!r}: unit_kind must be one of {UNIT_KINDS}")
        if self.cost not in COSTS:
            raise ValueError(f"analysis {self.name!r}: cost must be one of {COSTS}")

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """ConfigError (one line, naming the setting and the valid ones) for an unknown setting or a bad
        value."""
        where = f'[analysis."{self.name}"]'
        for key in settings:
            if key not in self.settings:
                valid = ", ".join(sorted(self.settings)) or "none (it takes no settings)"
                raise ConfigError(f"{where} {key}: unknown setting; valid: {valid}")
        if self.check is not None:
            try:
                self.check(settings)
            except (InputError, TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: {exc}") from None


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

    def check_config(self, analysis_settings: Mapping[str, Mapping[str, Any]],
                     enabled: list[str] | None = None) -> None:
        """Check ``[analysis."<name>"]`` tables and ``[worker] analyses`` against the registered analyses:
        ConfigError naming the first unknown analysis or setting, or bad value, with the valid choices."""
        valid = ", ".join(sorted(self._analyses))
        for name in enabled or ():
            if name not in self._analyses:
                raise ConfigError(f"[worker] analyses: unknown analysis {name!r}; valid: {valid}")
        for name, settings in analysis_settings.items():
            if name not in self._analyses:
                raise ConfigError(f'[analysis."{name}"]: unknown analysis {name!r}; valid: {valid}')
            self._analyses[name].check_settings(settings)

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
    name: str, unit_kind: str, version: str, *, requires: tuple[str, ...] = (), description: str = "",
    settings: tuple[str, ...] | list[str] | set[str] = (),
    check: Callable[[Mapping[str, Any]], Any] | None = None,
    cost: str = "fast",
) -> Callable[[AnalysisFunc], AnalysisFunc]:
    """Decorator: register ``func`` in the default registry under ``name`` (``settings``: the setting names
    it accepts; ``check``: a check of their values, raising InputError; ``cost``: "fast" or "slow")."""

    def wrap(func: AnalysisFunc) -> AnalysisFunc:
        _DEFAULT.add(Analysis(name, unit_kind, version, func, tuple(requires),
                              description or (func.__doc__ or ""), tuple(sorted(settings)), check, cost))
        return func

    return wrap


def default_registry() -> Registry:
    """The registry with every built-in analysis module imported."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return _DEFAULT


def load_registry(plugins: list[str] | tuple[str, ...] = ()) -> Registry:
    """The default registry with the ``[worker] plugins`` modules imported (each registers its analyses);
    ConfigError naming a plugin that cannot be imported."""
    registry = default_registry()
    for module in plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"[worker] plugins: analysis plugin {module!r} cannot be imported: {exc}"
                              ) from None
    return registry
