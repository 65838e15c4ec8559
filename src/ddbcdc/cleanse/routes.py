"""Changes of a routed mapping -> the route that takes each item, and its row there. Pure.

For every change, its **source key** (the DynamoDB key, the versions row's key) converts as
a plain mapping's key does, and each route's key templates are matched against the Keys
(:mod:`ddbcdc.cleanse.route_keys`): the route's **key** is its placeholders' values, each
converted exactly, or the item has no key in that route. An INSERT or MODIFY goes to the
first route whose templates match and whose entity attributes the NewImage has; its row there
is the route's columns from the NewImage plus the key. The catch-all route (the DynamoDB key,
the whole item) matches every item; without one, an item no route takes is poison.

A REMOVE has no row. Its route is known here only when its record says it: its OldImage, or
a key that the first route whose templates match takes without an entity attribute; else
PostgreSQL's versions row knows where the item lives (:mod:`ddbcdc.materialize.routed`). Every
change carries its key in every route whose templates match (``route_keys``): the live row
that a REMOVE or an entity change takes away is in one of them, found when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from ddbcdc.cleanse import (
    CleanChange,
    Cleanser,
    build_model,
    cause_of,
    missing_image,
    validate,
)
from ddbcdc.cleanse.coerce import key_coercer
from ddbcdc.cleanse.kept import Keeper
from ddbcdc.cleanse.route_keys import KeyTemplates, RouteKeys
from ddbcdc.cleanse.rowfn import compile_given_row, compile_values
from ddbcdc.decode.record import ChangeRecord
from ddbcdc.errors import CleanseError
from ddbcdc.schema.model import Route, TableMapping

__all__ = ["NO_ROUTE", "RoutedCleanser", "cleanser_for"]

#: Why an item is poison when no route matches it and the mapping has no catch-all.
NO_ROUTE = "no route matches the item (the mapping's unmatched target is off)"


def _text(value: Any) -> str:
    """The canonical text of a placeholder's value (what its pattern matches)."""
    if isinstance(value, date):
        return value.isoformat()
    return value if isinstance(value, str) else str(value)


class _RouteRows:
    """One route: whether an image is its entity, its rows, its key written back."""

    def __init__(self, route: Route, key_attributes: frozenset[str]) -> None:
        mapping = route.mapping
        self.route = route
        self.target = mapping.target_table
        self._entity = route.entity
        self._key_names = mapping.key
        key = set(mapping.key)
        data = tuple(c for c in mapping.columns if c.name not in key)
        self._by_name = {c.name: c for c in data}
        #: The NewImage, the Keys and the route's key -> the route's row (kept columns
        #: aside), or None when a value does not fit (:meth:`validated` says which).
        self.row_fn = compile_given_row(data, mapping.key, "NewImage")
        label = "".join(p.capitalize() for p in self.target.split("_")) or "Route"
        self._model = build_model(f"{label}Row", data, ())
        self._defaults = {c.name: c.default for c in data if c.default is not None}
        kept = mapping.extra_column is not None or mapping.item_column is not None
        implied = key_attributes | {a for a, _ in route.entity}
        #: Puts the kept columns into a row (None: the route keeps none).
        self.keeper = Keeper(mapping, implied) if kept else None

    def render(self, key: Sequence[Any]) -> dict[str, Any]:
        """The key attributes of the item whose key in this route is ``key`` (the inverse of
        :meth:`key_of`: each template written back with its placeholders' canonical text)."""
        by_name = dict(zip(self._key_names, key, strict=True))
        out: dict[str, Any] = {}
        for template in self.route.templates:
            values = [by_name[p] for p in template.placeholders]
            if template.whole:
                value = values[0]
                out[template.attribute] = value.isoformat() if isinstance(value, date) else value
            else:
                out[template.attribute] = template.render([_text(v) for v in values])
        return out

    def takes(self, image: Mapping[str, Any]) -> bool:
        """Whether ``image`` has this route's entity attribute values."""
        for attribute, value in self._entity:
            found = image.get(attribute)
            if type(found) is not str or found != value:
                return False
        return True

    def validated(
        self, record: ChangeRecord, image: dict[str, Any], key: tuple[Any, ...]
    ) -> dict[str, Any]:
        """The route's row (kept columns aside) of an image whose key in the route is
        ``key``, through the row model: what :attr:`row_fn` gives, or why it gives None.

        Raises:
            CleanseError: a value that does not fit its column (naming the route's table).
        """
        values = dict(self._defaults)
        for name, column in self._by_name.items():
            value = image.get(column.source)
            if value is not None:
                values[name] = value
        row = dict(validate(self._model, values, "NewImage", record, self.target, self._by_name))
        row.update(zip(self._key_names, key, strict=True))
        return row


class RoutedCleanser:
    """Cleanses records of a routed mapping (see the module doc); the interface of
    :class:`~ddbcdc.cleanse.Cleanser`.

    Args:
        mapping: a mapping with routes.
    """

    def __init__(self, mapping: TableMapping) -> None:
        self.mapping = mapping
        self._source = Cleanser(mapping)  # the DynamoDB key, as the versions row's key
        self._source_key = compile_values(mapping.key_columns, mapping.key, "Keys")
        key_attributes = frozenset(c.source for c in mapping.columns)
        self._routes = tuple(_RouteRows(r, key_attributes) for r in mapping.routes)
        self._by_target = {r.target: r for r in self._routes}
        self._key_coercers = [(key_coercer(c), c.source) for c in mapping.key_columns]
        self._keys = KeyTemplates(mapping)
        self._first, self._named = self._keys.first, self._keys.named
        self._functions, self._unset = self._keys.keys, self._keys.unset
        catch_all = mapping.catch_all
        #: The table of the items no other route takes (None: they are dead letters).
        self.unmatched = catch_all.target_table if catch_all is not None else None

    def source_key(self, target: str, key: Sequence[Any]) -> tuple[Any, ...]:
        """The DynamoDB key (as the versions row's key) of the row of route ``target`` whose
        key there is ``key``."""
        attributes = self._by_target[target].render(key)
        return tuple(coerce(attributes[source]) for coerce, source in self._key_coercers)

    def route_keys(
        self, keys: Mapping[str, Any], source_key: Sequence[Any] | None = None
    ) -> RouteKeys:
        """The item's key in each route (None where the templates do not match);
        ``source_key``: the DynamoDB key as the versions row's key, when known.

        Raises:
            ValueError: without ``source_key``, a DynamoDB key that does not convert.
        """
        if source_key is None:
            source_key = tuple(coerce(keys[name]) for coerce, name in self._key_coercers)
        return self._keys.of(keys, tuple(source_key))

    def _named_route(
        self, record: ChangeRecord, source_key: tuple[Any, ...]
    ) -> tuple[str | None, RouteKeys]:
        """The route of a REMOVE when its record names it (its OldImage, or a key only one
        route can have), and its route keys."""
        keys, image = record.keys, record.old_image
        if image is None:
            named, found = self._named(keys, source_key)
            route_keys = RouteKeys(self._functions, keys, source_key, found, None, None)
            return (None if named is None else self._routes[named].target), route_keys
        route_keys = self._keys.of(keys, source_key)
        for index, rows in enumerate(self._routes):
            if rows.takes(image) and route_keys[index] is not None:
                return rows.target, route_keys
        return None, route_keys

    def cleanse(self, record: ChangeRecord) -> CleanChange:
        """Turn one change record into a :class:`~ddbcdc.cleanse.CleanChange` whose key is
        the DynamoDB key and whose row (INSERT/MODIFY) is its route's.

        Raises:
            CleanseError: a key that does not convert, a value that does not fit its
                route's column, or (with no catch-all) an item no route takes.
        """
        keys = record.keys
        source_key = self._source_key(keys, keys)
        if source_key is None:
            source_key = self._source.key_of(record)  # raises, saying why
        us, seq_text = record.approximate_creation_us, record.sequence_number
        seq = int(seq_text) if seq_text is not None and seq_text.isdigit() else None
        version = (us, -1 if seq is None else seq, record.event_id)  # as version_of gives it
        if record.event_name == "REMOVE":
            route, route_keys = self._named_route(record, source_key)
            return CleanChange(
                self.mapping, record.event_id, "REMOVE", source_key, None, version, us, seq,
                cause_of(record), route=route, route_keys=route_keys,
            )  # fmt: skip
        image = record.new_image
        if image is None:
            raise missing_image(record)
        found = self._first(image, keys, source_key)
        if found is None:
            raise CleanseError(
                f"{self.mapping.target_table}: {NO_ROUTE}",
                path="dynamodb.Keys",
                shard_id=record.shard_id,
                sequence_number=record.sequence_number,
                reason=NO_ROUTE,
            )
        index, key = found
        rows = self._routes[index]
        row = rows.row_fn(image, keys, key)
        if row is None:
            row = rows.validated(record, image, key)
        if rows.keeper is not None:
            rows.keeper.add(row, image, record)
        return CleanChange(
            self.mapping, record.event_id, record.event_name, source_key, row, version, us, seq,
            None, None, rows.target,
            RouteKeys(self._functions, keys, source_key, self._unset, index, key),
        )  # fmt: skip


def cleanser_for(mapping: TableMapping) -> Cleanser | RoutedCleanser:
    """The cleanser of a mapping: routed or plain."""
    return RoutedCleanser(mapping) if mapping.routes else Cleanser(mapping)
