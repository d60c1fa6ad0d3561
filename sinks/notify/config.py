"""Options of the notification sinks: the body (every sink), region, endpoint, size limit
and the claim check (the AWS sinks), message attributes and FIFO ids (SNS, SQS).

Templates and paths are parsed here, so a typo fails at start-up naming the option.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fanout.config import SinkConfig
from fanout.config.types import Model
from sinks.notify.format import BodyFormat, check_fields, check_template


class FormatConfig(SinkConfig):
    """The body options every notification sink has."""

    format: Literal["raw", "plain", "template"] = Field(
        "plain",
        description="raw (the Lambda record), plain ({eventName, table, keys, new, old} as "
        "plain JSON) or template (the fields of `template`).",
    )
    template: dict[str, str] | None = Field(
        None,
        description="format template: output field -> path (e.g. {id: keys.pk, status: "
        "new.status}); fields without a value are left out.",
    )

    @field_validator("template")
    @classmethod
    def _template(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            check_fields(value)
        return value

    @model_validator(mode="after")
    def _template_needed(self) -> FormatConfig:
        if self.format == "template" and not self.template:
            raise ValueError("format template needs 'template'")
        if self.format != "template" and self.template:
            raise ValueError("'template' is only used with format: template")
        return self

    def body_format(self) -> BodyFormat:
        return BodyFormat(self.format, self.template)


class LargeMessagesConfig(Model):
    """Where the bodies of records too large for one message go (the claim check)."""

    bucket: str = Field(description="S3 bucket the bodies are put to.")
    prefix: str = Field("", description="Key prefix; objects are <prefix><sink>/<eventID>.json.")
    region: str | None = Field(None, description="The bucket's region; default: the sink's.")
    endpoint_url: str | None = Field(None, description="Another S3 endpoint (tests, emulators).")


class AwsNotifyConfig(FormatConfig):
    """Options of the AWS notification sinks."""

    region: str | None = Field(
        None,
        description="AWS region; default: from the destination's ARN or URL, else the environment.",
    )
    endpoint_url: str | None = Field(None, description="Another endpoint (tests, emulators).")
    max_message_bytes: int | None = Field(
        None, ge=1024, description="A lower message size limit than the destination's."
    )
    large_messages: LargeMessagesConfig | None = Field(
        None,
        description="Put bodies too large for one message to S3 and send a pointer; "
        "default: such records fail permanently (dead-letter destination).",
    )


_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
DEFAULT_ATTRIBUTES = {"eventName": "{eventName}", "table": "{table}"}


class MessageConfig(AwsNotifyConfig):
    """Options of the sinks that send messages (SNS, SQS): attributes and FIFO ids."""

    attributes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ATTRIBUTES),
        description="Message attributes (String) name -> template, for subscription filters; "
        "one rendering empty is left out. Default: eventName and table.",
    )
    group_id: str | None = Field(
        None,
        description="FIFO only: MessageGroupId template, e.g. '{keys.pk}'; default: the "
        "item's key attributes joined by '#'.",
    )

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 10:
            raise ValueError("at most 10 message attributes")
        for name, template in value.items():
            lowered = name.lower()
            if (
                not _ATTRIBUTE_NAME.match(name)
                or lowered.startswith(("aws.", "amazon."))
                or name.startswith(".")
                or name.endswith(".")
                or ".." in name
            ):
                raise ValueError(f"{name!r} is not a valid message attribute name")
            try:
                check_template(template)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @field_validator("group_id")
    @classmethod
    def _group_id(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)
