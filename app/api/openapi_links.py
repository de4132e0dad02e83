"""OpenAPI links: the id a create returns is the ``{job_id}`` / ``{dataset_id}`` of every route
that takes one. Clients and schema-driven tools (schemathesis' stateful phase) follow them, so
they call those routes with ids that exist instead of random strings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

# (path of the create, its method, the path parameter its answer's `id` fills)
CREATES = (("/v1/jobs", "post", "job_id"), ("/v1/datasets", "post", "dataset_id"))
_HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with a link from each create's 2xx answers to each route taking its id."""
    paths: dict[str, dict[str, Any]] = schema.get("paths", {})
    for create_path, create_method, param in CREATES:
        create = paths.get(create_path, {}).get(create_method)
        if create is None:
            continue
        links = {
            f"{method.upper()} {path}": {
                "operationId": operation["operationId"],
                "parameters": {param: "$response.body#/id"},
            }
            for path, operations in sorted(paths.items())
            if "{" + param + "}" in path
            for method, operation in operations.items()
            if method in _HTTP_METHODS and "operationId" in operation
        }
        for status, response in create.get("responses", {}).items():
            if str(status).startswith("2"):
                response["links"] = links
    return schema


def install(app: FastAPI) -> None:
    """Serve the app's OpenAPI document with the links added (built once, like FastAPI's)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI's cached document: the links are added to it once
        if not schema.get("x-sngan-links"):
            add_links(schema)
            schema["x-sngan-links"] = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
