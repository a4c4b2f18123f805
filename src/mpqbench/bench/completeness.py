"""The report's completeness section: what of a suite has run, and what has not.

A suite declares fixed cells (the 32-bit references, fixed targets) and frontier searches.
A fixed cell is done when a record with its config hash exists; a frontier search is done
when its summary (``frontiers/<search key>.json``) exists, which the runner writes only
once the search has decided. A search with records for some of its grid cells but no
summary was interrupted (or is running in another shard). A report of a partial run says
so before its headline, so no reader takes a subset for the suite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mpqbench.bench.suite import FrontierSearch, Suite

__all__ = ["completeness_section", "search_states"]


def search_states(suite: Suite, records: Sequence[Mapping[str, Any]],
                  frontiers: Sequence[Mapping[str, Any]]) -> dict[str, list[FrontierSearch]]:
    """The suite's frontier searches by state: ``finished``, ``started``, ``not started``."""
    have = {r.get("config_hash") for r in records}
    done = {f.get("key") for f in frontiers}
    states: dict[str, list[FrontierSearch]] = {"finished": [], "started": [], "not started": []}
    for search in suite.frontiers:
        if search.key in done:
            states["finished"].append(search)
        elif any(c.spec.config_hash() in have for c in search.grid_cells()):
            states["started"].append(search)
        else:
            states["not started"].append(search)
    return states


def _by_label(searches: Iterable[FrontierSearch]) -> str:
    groups: dict[tuple[str, str], list[int]] = {}
    for s in searches:
        groups.setdefault((s.template.model, s.label), []).append(s.template.budget.seed)
    models = {model for model, _ in groups}
    parts = []
    for (model, label), seeds in groups.items():
        where = f"{model} " if len(models) > 1 else ""
        noun = "seed" if len(seeds) == 1 else "seeds"
        parts.append(f"{where}{label} ({noun} {', '.join(map(str, sorted(seeds)))})")
    return "; ".join(parts)


def completeness_section(suite: Suite, records: Sequence[Mapping[str, Any]],
                         frontiers: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: whether every fixed cell and frontier search of ``suite`` has run.

    Args:
        suite: the suite the results belong to.
        records: the loaded records (any extra ones are ignored here).
        frontiers: the frontier summaries found beside them.
    """
    have = {r.get("config_hash") for r in records}
    missing = [c for c in suite.cells if c.spec.config_hash() not in have]
    states = search_states(suite, records, frontiers)
    n_fixed, n_search = len(suite.cells), len(suite.frontiers)
    head = (f"Suite {suite.name} (`{suite.path.name}`) declares {n_fixed} fixed "
            f"cell{'s' if n_fixed != 1 else ''} and {n_search} frontier "
            f"search{'es' if n_search != 1 else ''}.")
    if not missing and len(states["finished"]) == n_search:
        return ["## Completeness", "", f"{head} Every one of them has run.", ""]
    lines = ["## Completeness: a partial run", "",
             f"{head} **This is a partial run**: {len(states['finished'])} of {n_search} "
             f"searches have finished, {len(states['started'])} started without finishing, "
             f"{len(states['not started'])} have not started; {n_fixed - len(missing)} of "
             f"{n_fixed} fixed cells have a record. The headline, the frontier table and the "
             "seed spread below cover only what ran. A search that has not finished claims "
             "no frontier; the cells it has run appear in the tables as ordinary cells.", ""]
    for state, searches in states.items():
        if searches:
            lines.append(f"- {state.capitalize()}: {_by_label(searches)}.")
    if missing:
        lines.append("- Fixed cells without a record: "
                     + ", ".join(f"`{c.key}`" for c in missing) + ".")
    return [*lines, ""]
