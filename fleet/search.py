"""Fleet text search (`q`): a case-insensitive substring of a device's id, serial or name, served by an index.

The meaning is the one the registry always had: `UPPER(x) LIKE UPPER('%q%')` on id, serial and name (tortoise's
`icontains`), which alone scans every device. Migration `models.0003_device_search` adds an index under it:

* SQLite: `device_search`, an FTS5 table with the trigram tokenizer over the three columns (external content:
  it stores the index only), kept in step by triggers on insert, delete and updates of id, serial or name (not
  on presence updates). A query of three characters or more first takes the rows whose trigrams match, then
  applies the old condition to those, so the answer is exactly the old one (the FTS match folds case more
  broadly than SQLite's ASCII-only UPPER, never more narrowly).
* PostgreSQL: a pg_trgm GIN index on `POSTGRES_TEXT`, the three columns upper-cased and joined by a unit
  separator. A search takes the rows whose joined text contains `UPPER(q)` (which every old match does) and
  applies the old condition, written out as tortoise writes it, to those.

Without the index (SQLite built without FTS5 or trigram, pg_trgm not installable) the same condition runs as a
scan, with the same results. A SQLite `VACUUM` may renumber the device table's rowids, which the FTS table
follows; after one, run `marketfleet db reindex` (`rebuild`), which re-reads every device.
"""

from __future__ import annotations

import weakref
from typing import Any

from tortoise import Tortoise
from tortoise.expressions import Q, RawSQL
from tortoise.queryset import QuerySet

from fleet.models import Device

TABLE = "device_search"
POSTGRES_TEXT = 'UPPER("id") || chr(31) || UPPER("serial") || chr(31) || UPPER("name")'  # as indexed, verbatim
MIN_INDEXED = 3  # a trigram index cannot narrow shorter queries: they scan, on both backends

_indexed: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def substring_condition(q: str) -> Q:
    """The search's meaning, on every backend."""
    return Q(id__icontains=q) | Q(serial__icontains=q) | Q(name__icontains=q)


async def sqlite_index_ready(connection: Any) -> bool:
    """Whether this SQLite database has the FTS table (looked up once per connection)."""
    ready = _indexed.get(connection)
    if ready is None:
        rows = await connection.execute_query_dict(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", [TABLE])
        ready = _indexed[connection] = bool(rows)
    return ready


def fts_phrase(q: str) -> str:
    """`q` as one FTS5 phrase in an SQL string literal: FTS5 doubles `"`, SQL doubles `'`."""
    phrase = '"' + q.replace('"', '""') + '"'
    return "'" + phrase.replace("'", "''") + "'"


def like_pattern(q: str) -> str:
    """`%q%` matching `q` literally under `ESCAPE '\\'`, as a PostgreSQL escape-string literal (safe whatever
    standard_conforming_strings says)."""
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return "E'" + pattern.replace("\\", "\\\\").replace("'", "''") + "'"


async def postgres_index_ready(connection: Any) -> bool:
    ready = _indexed.get(connection)
    if ready is None:
        rows = await connection.execute_query_dict(
            "SELECT 1 FROM pg_indexes WHERE tablename = 'device' AND indexname = 'device_search_trgm'")
        ready = _indexed[connection] = bool(rows)
    return ready


async def rebuild() -> bool:
    """Rebuild the search index from the device table (after a SQLite `VACUUM`, or to repair it). False if
    this database has no index to rebuild (PostgreSQL's GIN index follows the table by itself)."""
    connection = Tortoise.get_connection("default")
    if connection.capabilities.dialect != "sqlite" or not await sqlite_index_ready(connection):
        return False
    await connection.execute_script(f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')")
    return True


async def search(query: QuerySet[Device], q: str) -> QuerySet[Device]:
    """`query` narrowed to the devices whose id, serial or name contains `q` (ignoring case)."""
    connection = Tortoise.get_connection("default")
    dialect = connection.capabilities.dialect
    if "\x00" in q:  # no literal may carry it: the plain condition
        return query.filter(substring_condition(q))
    if dialect == "sqlite" and len(q) >= MIN_INDEXED and await sqlite_index_ready(connection):
        candidates = f"(SELECT id FROM {TABLE} WHERE {TABLE} MATCH {fts_phrase(q)})"
        return query.filter(substring_condition(q), id__in=RawSQL(candidates))
    if dialect == "postgres" and len(q) >= MIN_INDEXED and await postgres_index_ready(connection):
        # The whole condition inside the subquery: with it outside, the planner tends to scan the table for it
        # and use the index only to confirm. Same SQL as tortoise's icontains (UPPER … LIKE UPPER … ESCAPE).
        pattern, escape = like_pattern(q), "ESCAPE E'\\\\'"
        exact = " OR ".join(f'UPPER(CAST("{column}" AS VARCHAR)) LIKE UPPER({pattern}) {escape}'
                            for column in ("id", "serial", "name"))
        candidates = f"(SELECT id FROM device WHERE ({POSTGRES_TEXT}) LIKE UPPER({pattern}) {escape} AND ({exact}))"
        return query.filter(id__in=RawSQL(candidates))
    return query.filter(substring_condition(q))  # no index here: the condition alone, a scan
