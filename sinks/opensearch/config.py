"""Options of the ``opensearch`` sink."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from fanout.config import SinkConfig
from fanout.config.types import Duration, Model
from fanout.errors import ConfigError
from sinks.opensearch.document import Template, index_name_problem

USERNAME_VARIABLE = "OPENSEARCH_USERNAME"
PASSWORD_VARIABLE = "OPENSEARCH_PASSWORD"  # noqa: S105 - a variable name, not a secret


class NoAuth(Model):
    """No authentication (a local or network-protected cluster)."""

    type: Literal["none"] = "none"


class BasicAuth(Model):
    """HTTP Basic authentication (the security plugin's internal users)."""

    type: Literal["basic"]
    username: str | None = Field(
        None, description=f"Default: the environment variable {USERNAME_VARIABLE}."
    )
    password: SecretStr | None = Field(
        None, description=f"Default: the environment variable {PASSWORD_VARIABLE}."
    )

    def credentials(self) -> tuple[str, str]:
        """(username, password), from the config or the environment.

        Raises:
            ValueError: one of them is set nowhere.
        """
        username = self.username or os.environ.get(USERNAME_VARIABLE)
        password = (
            self.password.get_secret_value() if self.password else os.environ.get(PASSWORD_VARIABLE)
        )
        if not username:
            raise ValueError(f"basic auth needs 'username' or ${USERNAME_VARIABLE}")
        if not password:
            raise ValueError(f"basic auth needs 'password' or ${PASSWORD_VARIABLE}")
        return username, password


class SigV4Auth(Model):
    """AWS Signature Version 4 with the process's credentials (the standard chain)."""

    type: Literal["sigv4"]
    service: Literal["es", "aoss"] = Field(
        "es", description="es: Amazon OpenSearch Service; aoss: OpenSearch Serverless."
    )
    region: str | None = Field(
        None, description="Default: from the endpoint's host name, else the AWS environment."
    )


Auth = Annotated[NoAuth | BasicAuth | SigV4Auth, Field(discriminator="type")]


class OpenSearchSinkConfig(SinkConfig):
    """Options of the ``opensearch`` sink."""

    type: Literal["opensearch"] = "opensearch"
    # A bulk request of a few hundred documents is OpenSearch's sweet spot.
    batch_size: int = Field(500, ge=1, le=10_000, description="Records per send at most.")
    endpoint: str = Field(
        description="The cluster's URL, e.g. https://search-x.eu-west-1.es.amazonaws.com or "
        "http://127.0.0.1:9200."
    )
    index: str = Field(
        description="The index, or a template filled from the item's attributes, e.g. "
        "'orders-{region}' (lower-cased)."
    )
    document_id: str | None = Field(
        None,
        description="Template of the document id, e.g. '{pk}#{sk}'; default: the key "
        "attributes, sorted by name, joined with '#'.",
    )
    routing: str | None = Field(
        None, description="Template of the routing value; default: none (the id routes)."
    )
    include: list[str] | None = Field(
        None, description="Top-level attributes to index; default: all."
    )
    exclude: list[str] = Field(default_factory=list, description="Top-level attributes to drop.")
    rename: dict[str, str] = Field(
        default_factory=dict, description="Top-level attributes to index under another name."
    )
    numbers: Literal["auto", "number", "string"] = Field(
        "auto",
        description="DynamoDB numbers as JSON numbers where exact, else strings (auto); "
        "always numbers, rounded to doubles (number); always strings (string).",
    )
    ttl_deletes: Literal["delete", "keep"] = Field(
        "delete", description="Items deleted by Time to Live: delete their documents, or keep them."
    )
    metadata_field: str = Field(
        "_fanout",
        description="Object in every document holding the change's full sequence number, "
        "creation time and eventID (compared when versions conflict; not indexed when the "
        "sink creates the index).",
    )
    auth: Auth = Field(default_factory=NoAuth)
    verify_tls: bool = Field(True, description="Verify the server's TLS certificate.")
    ca_bundle: str | None = Field(
        None, description="PEM file of the CAs to trust instead of the system's."
    )
    timeout: Duration = Field(30.0, gt=0, description="Seconds one HTTP request may take.")
    max_bulk_actions: int = Field(1000, ge=1, description="Actions per _bulk request at most.")
    max_bulk_bytes: int = Field(
        5 * 1024 * 1024,
        ge=1024,
        description="Bytes per _bulk request at most (Amazon OpenSearch Service refuses more "
        "than 10 MiB on small instance types); a larger single document is sent alone.",
    )
    refresh: Literal["false", "true", "wait_for"] | None = Field(
        None, description="The _bulk refresh parameter; default: the index's refresh interval."
    )
    create_index: bool = Field(
        True,
        description="Create a missing index with gc_deletes, index_settings and mappings "
        "(templated indexes on first use).",
    )
    gc_deletes: Duration | None = Field(
        86_400.0,
        ge=0,
        description="index.gc_deletes of the indexes the sink creates: how long a deleted "
        "document's version is kept. A replayed or redriven change older than this can bring "
        "a deleted document back. Existing indexes with less are reported at start. null: "
        "leave the setting alone (OpenSearch Serverless manages it).",
    )
    update_gc_deletes: bool = Field(
        False, description="Raise an existing index's shorter index.gc_deletes instead of warning."
    )
    index_settings: dict[str, Any] = Field(
        default_factory=dict, description="More settings for indexes the sink creates."
    )
    mappings: dict[str, Any] | None = Field(
        None, description="Mappings for indexes the sink creates (the metadata field is added)."
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("the endpoint takes no query or fragment")
        return value.rstrip("/")

    @field_validator("index", "document_id", "routing")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                raise ValueError("must not be empty")
            Template(value)  # raises ValueError naming the problem
        return value

    @field_validator("index")
    @classmethod
    def _index(cls, value: str) -> str:
        template = Template(value)
        if template.static:
            problem = index_name_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("metadata_field")
    @classmethod
    def _metadata_field(cls, value: str) -> str:
        if not value or "." in value:
            raise ValueError("must be a non-empty top-level field name without '.'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpenSearchSinkConfig:
        renamed = [self.rename.get(name, name) for name in self.rename]
        if self.metadata_field in renamed:
            raise ValueError(f"rename must not produce the metadata field {self.metadata_field!r}")
        return self

    def document_template(self) -> Template | None:
        """The document id template, or None for the default (the key attributes)."""
        return Template(self.document_id) if self.document_id is not None else None


def check(name: str, config: OpenSearchSinkConfig, path: str) -> None:
    """Start-up checks that need no network: credentials of basic auth, the CA bundle."""
    if isinstance(config.auth, BasicAuth):
        try:
            config.auth.credentials()
        except ValueError as exc:
            raise ConfigError(f"{path}.auth", str(exc)) from None
    if config.ca_bundle is not None and not Path(config.ca_bundle).is_file():
        raise ConfigError(f"{path}.ca_bundle", f"no such file: {config.ca_bundle}")
