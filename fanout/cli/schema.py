"""The JSON Schema of the config file, for editors and ``config/schema.json``."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter


def json_schema() -> dict[str, Any]:
    """Settings' schema, with ``sinks`` values described by each sink type's own model."""
    from fanout.config import Settings
    from fanout.sink import SinkRegistry

    schema = Settings.model_json_schema()
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    variants = []
    registry = SinkRegistry()
    for kind in registry:
        entry = registry[kind]
        sub = TypeAdapter(entry.config).json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        title = sub.get("title", kind)
        defs[title] = sub
        variants.append({"$ref": f"#/$defs/{title}"})
    schema["properties"]["sinks"]["additionalProperties"] = {
        "oneOf": variants,
        "discriminator": {"propertyName": "type"},
    }
    schema["title"] = "fanout configuration"
    return schema
