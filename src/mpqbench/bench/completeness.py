"""The report's completeness section: what of a suite has run, and what has not.

A suite declares fixed cells (the 32-bit references, fixed targets) and frontier searches.
A fixed cell is done when a record with its config hash exists; a frontier search is done
when its summary (``frontiers/<search key>.json``) exists, which the runner writes only
once the search has decided. A search with records for some of its grid cells but no
summary was interrupted (or is running in another shard). A report of a partial run says
so before its headline, so no reader takes a subset for the suite.

It also bounds what is left: each unfinished search runs at most
:func:`~mpqbench.bench.frontier.max_frontier_cells` cells less those it has run, and each
cell is priced at the median recorded wall time (training stages plus evaluation of every
split) of the cells of its system label here, or of every compressed cell when its label
has none yet. The shared teacher cache, the packed export and process start-up are left
out, so the figure is a guide to the order of magnitude, not a promise.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mpqbench.bench.frontier import max_frontier_cells
from mpqbench.bench.suite import Cell, FrontierSearch, Suite

__all__ = ["cell_seconds", "completeness_section", "remaining_estimate", "search_states"]


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


def cell_seconds(record: Mapping[str, Any]) -> float | None:
    """A record's training stages plus the wall time of evaluating every split, in seconds;
    None when it stores neither."""
    stages = record.get("stages") or []
    walls = [(split.get("timing") or {}).get("wall_s")
             for split in (record.get("splits") or {}).values()]
    walls = [float(w) for w in walls if w is not None]
    if not stages and not walls:
        return None
    return sum(float(st.get("seconds", 0.0)) for st in stages) + sum(walls)


def _devices(records: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({str(st["device"]) for r in records for st in r.get("stages") or []
                   if st.get("device")})


def remaining_estimate(suite: Suite, records: Sequence[Mapping[str, Any]],
                       unfinished: Sequence[FrontierSearch],
                       missing: Sequence[Cell]) -> tuple[int, float | None, list[str]]:
    """(the most cells still to run, their estimated seconds or None, the devices priced).

    Args:
        suite: the suite.
        records: its loaded records.
        unfinished: its searches without a summary (started or not).
        missing: its fixed cells without a record.
    """
    mine = [r for r in records if (r.get("suite") or {}).get("name") == suite.name
            or r.get("config_hash") in {c.spec.config_hash() for c in suite.cells}]
    have = {r.get("config_hash") for r in records}
    by_label: dict[str, list[float]] = {}
    for r in mine:
        seconds = cell_seconds(r)
        if seconds is not None:
            by_label.setdefault(str((r.get("suite") or {}).get("label")), []).append(seconds)
    compressed = [t for label, ts in by_label.items() if label != "fp32" for t in ts]

    def pace(label: str) -> float | None:
        times = by_label.get(label) or (compressed if label != "fp32" else [])
        return statistics.median(times) if times else None

    todo: list[tuple[str, int]] = [(c.label, 1) for c in missing]
    for search in unfinished:
        ran = sum(c.spec.config_hash() in have for c in search.grid_cells())
        todo.append((search.label, max(max_frontier_cells(search.spec) - ran, 0)))
    cells = sum(n for _, n in todo)
    prices = [(pace(label), n) for label, n in todo if n]
    if any(p is None for p, _ in prices):
        return cells, None, []
    return cells, sum(p * n for p, n in prices if p is not None), _devices(mine)


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
    cells, seconds, devices = remaining_estimate(
        suite, records, states["started"] + states["not started"], missing)
    if cells:
        line = f"- Still to run: at most {cells} cell{'s' if cells != 1 else ''}"
        if seconds is not None:
            line += (f", about {seconds / 3600:.1f} h at most at the median pace of this "
                     "suite's recorded cells of the same system label (of every compressed "
                     f"cell for a label with none yet) on {', '.join(devices)} (training and "
                     "evaluation; teacher cache and export not counted)")
        lines.append(line + ".")
    return [*lines, ""]
