"""The registry of elicitation interfaces: one module of this package per interface,
each defining `SPEC`, an InterfaceSpec. A new interface is a new module here (and its
JavaScript module, static/js/interfaces/<name>.js); modules are found by listing the
package, so nothing else is edited, and the model fields take their choices from here
(a callable), so no migration is needed either."""

from __future__ import annotations

import importlib
import pkgutil

from .base import DISCLOSURES, Evidence, HmixMapping, InterfaceSpec

__all__ = [
    "DISCLOSURES",
    "Evidence",
    "HmixMapping",
    "InterfaceSpec",
    "all",
    "choices",
    "get",
    "names",
]

_NOT_INTERFACES = {"base"}
_registry: dict[str, InterfaceSpec] = {}


def _load() -> dict[str, InterfaceSpec]:
    if not _registry:
        found = {}
        for module in pkgutil.iter_modules(__path__):
            if module.name in _NOT_INTERFACES or module.name.startswith("_"):
                continue
            spec = importlib.import_module(f"{__name__}.{module.name}").SPEC
            _check_disclosures(spec)
            found[spec.name] = spec
        _registry.update(sorted(found.items(), key=lambda item: (item[1].order, item[0])))
    return _registry


def _check_disclosures(spec: InterfaceSpec) -> None:
    """An interface's shows/hides are known DISCLOSURES, disjoint, and agree with
    names_classes: the cross-study rule (study_rules.disclosure_conflicts) trusts them."""
    unknown = (spec.shows | spec.hides) - DISCLOSURES.keys()
    if unknown or spec.shows & spec.hides or ("classes" in spec.shows) != spec.names_classes:
        raise TypeError(
            f"interface {spec.name!r}: shows {sorted(spec.shows)} / hides {sorted(spec.hides)} "
            f"must be disjoint subsets of {sorted(DISCLOSURES)}, with 'classes' shown "
            "exactly when names_classes"
        )


def get(name: str) -> InterfaceSpec:
    """The interface stored as `name`; raises LookupError for an unknown one."""
    try:
        return _load()[name]
    except KeyError:
        raise LookupError(f"unknown interface {name!r}") from None


def all() -> list[InterfaceSpec]:  # noqa: A001 - the registry's own name for it
    """Every registered interface, in display order."""
    return list(_load().values())


def names(grid: bool | None = None) -> list[str]:
    """The stored names of every interface (or only grid / only single ones)."""
    return [s.name for s in all() if grid is None or s.grid == grid]


def choices() -> list[tuple[str, str]]:
    """(name, label) of every interface: the model fields' choices."""
    return [(s.name, s.label) for s in all()]
