"""Stream records to bulk actions: where each item's document lives (index, id, routing),
what it holds, and the external version it is written with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from fanout.records import Record
from sinks.opensearch.config import OpenSearchSinkConfig
from sinks.opensearch.document import (
    MAX_ID_BYTES,
    RecordError,
    Stamp,
    Template,
    index_name_problem,
    is_ttl_delete,
    key_template,
    plain_converter,
    stamp,
    version_of,
)

Place = tuple[str, str, str | None]  # (index, document id, routing)


@dataclass(slots=True)
class Action:
    """One bulk action for the record at ``record`` in the batch."""

    record: int
    op: str  # "index" | "delete"
    index: str
    id: str
    routing: str | None
    version: int
    stamp: Stamp
    source: bytes | None = None
    gte: bool = False  # version_type external_gte: written again after a lost tie-break
    primary: bool = True  # False for the delete at the item's previous place
    line: bytes = b""

    def encoded(self) -> bytes:
        """The action's NDJSON lines (as the official clients write them)."""
        if not self.line:
            meta: dict[str, Any] = {
                "_index": self.index,
                "_id": self.id,
                "version": self.version,
                "version_type": "external_gte" if self.gte else "external",
            }
            if self.routing is not None:
                meta["routing"] = self.routing
            line = orjson.dumps({self.op: meta}) + b"\n"
            if self.source is not None:
                line += self.source + b"\n"
            self.line = line
        return self.line

    def again(self, version: int) -> Action:
        """This action with ``external_gte`` at ``version`` (the stored change's version)."""
        return replace(self, version=version, gte=True, line=b"")


class Planner:
    """Turns records into actions, as the sink's options say."""

    def __init__(self, config: OpenSearchSinkConfig) -> None:
        self.config = config
        self._plain = plain_converter(config.numbers)
        self.index = Template(config.index)
        self._document_id = config.document_template()
        self._routing = Template(config.routing) if config.routing else None
        self._include = frozenset(config.include) if config.include is not None else None
        self._exclude = frozenset(config.exclude)
        self._rename = dict(config.rename)
        self._whole = self._include is None and not self._exclude and not self._rename
        self._key_templates: dict[tuple[str, ...], Template] = {}
        # Attributes that place a document; an item whose place only depends on its keys
        # (the usual case) can never move.
        self._placing = frozenset().union(
            self.index.names,
            self._document_id.names if self._document_id is not None else (),
            self._routing.names if self._routing is not None else (),
        )

    def place(self, keys: Mapping[str, Any], image: Mapping[str, Any] | None) -> Place:
        """Where an item's document lives, from its keys and an image.

        Raises:
            RecordError: a template needs an attribute the record lacks, or the index name
                or document id is not acceptable to OpenSearch.
        """
        if self.index.static:
            index = self.config.index
        else:
            index = self.index.render(image, keys).lower()
            problem = index_name_problem(index)
            if problem:
                raise RecordError(problem)
        template = self._document_id
        if template is None:
            names = tuple(keys)
            template = self._key_templates.get(names)
            if template is None:
                template = self._key_templates[names] = key_template(keys)
        doc_id = template.render(keys, image)
        if not doc_id or len(doc_id.encode()) > MAX_ID_BYTES:
            raise RecordError(f"document id {doc_id[:60]!r} is empty or longer than 512 bytes")
        routing = self._routing.render(image, keys) if self._routing is not None else None
        return index, doc_id, routing

    def source(self, image: Mapping[str, Any], record: Record, when: Stamp) -> bytes:
        """The document: the image as plain JSON, with the change's metadata."""
        plain = self._plain
        if self._whole:
            doc = {name: plain(value) for name, value in image.items()}
        else:
            doc = {}
            include, exclude, rename = self._include, self._exclude, self._rename
            for name, value in image.items():
                if (include is None or name in include) and name not in exclude:
                    doc[rename.get(name, name)] = plain(value)
        doc[self.config.metadata_field] = {
            "seq": record["dynamodb"]["SequenceNumber"],
            "created": when[0],
            "event_id": record.get("eventID"),
        }
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError as exc:
            raise RecordError(f"the document cannot be encoded as JSON: {exc}") from None

    def plan(self, position: int, record: Record, out: list[Action]) -> None:
        """Append the actions of the record at ``position`` to ``out``: none (a kept TTL
        delete), a delete, an index, or a delete at the item's old place and an index.

        Raises:
            RecordError: the record cannot be written (it is dead-lettered).
        """
        try:
            ddb = record["dynamodb"]
            keys = ddb["Keys"]
            new, old = ddb.get("NewImage"), ddb.get("OldImage")
        except (KeyError, TypeError):
            raise RecordError("the record has no dynamodb.Keys") from None
        when = stamp(record)
        version = version_of(*when)
        event = record.get("eventName")
        if event == "REMOVE":
            if self.config.ttl_deletes == "keep" and is_ttl_delete(record):
                return
            out.append(Action(position, "delete", *self.place(keys, old), version, when))
            return
        if event not in ("INSERT", "MODIFY"):
            raise RecordError(f"unknown eventName {event!r}")
        if not new:
            raise RecordError(
                "the record has no NewImage: the stream's view type must be NEW_IMAGE or "
                "NEW_AND_OLD_IMAGES"
            )
        here = self.place(keys, new)
        if old and not self._placing <= keys.keys():
            try:
                before = self.place(keys, old)
            except RecordError:
                before = here
            if before != here:  # the item moved: its document leaves the old place
                out.append(Action(position, "delete", *before, version, when, primary=False))
        source = self.source(new, record, when)
        out.append(Action(position, "index", *here, version, when, source))
