"""docs/API.md says what the service's own OpenAPI document says.

The doc is read with a few conventions, so that what it names can be checked:
- a route is a heading ``### METHOD /path`` (any placeholder name: ``{id}`` = ``{job_id}``);
- a field table's first header cell is ``\\`Schema\\` field``, Schema a component of the
  OpenAPI document; a field is a dotted path into it (``progress.step``; a list's items are
  entered on the way); a ``default`` column holding one backticked JSON value must equal the
  schema's default, and ``required`` must be required;
- a parameter table (first header cell ``parameter``) lists a route's query and header
  parameters with where they go and their default;
- a ``Responses:`` paragraph lists ``**status**`` followed by backticked names outside
  parentheses: a schema (the response's JSON body), a media type, or an error code (a string
  in the code under app/);
- ``Body:`` names the request body's schema, or its media type and form fields;
- a ````json Schema```` block is an example whose every key must be a field of Schema.

Building the app and its OpenAPI document must touch no database, broker or file: the
fixture points the settings at unreachable servers and an empty data directory.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.core.config import get_settings

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "API.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROUTE_HEADING = re.compile(rf"^#{{2,4}} ({'|'.join(METHODS)}) (/\S*)\s*$")
FIELD_HEADER = re.compile(r"^`(\w+)` field$")
ERROR_CODE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+|[a-z]+")

Route = tuple[str, str]  # (method, path with every placeholder written "{}")


def normalize(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


@dataclass
class Doc:
    routes: list[Route] = field(default_factory=list)
    # (route or None, schema name, [(field path, default cell or None)])
    field_tables: list[tuple[Route | None, str, list[tuple[str, str | None]]]] = field(
        default_factory=list
    )
    params: dict[Route, list[tuple[str, str, str | None]]] = field(default_factory=dict)
    responses: dict[Route, list[tuple[str, list[str]]]] = field(default_factory=dict)
    bodies: dict[Route, list[str]] = field(default_factory=dict)
    examples: list[tuple[str, Any]] = field(default_factory=list)
    error_codes: set[str] = field(default_factory=set)


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def outside_parentheses(text: str) -> str:
    while True:
        shorter = re.sub(r"\([^()]*\)", "", text)
        if shorter == text:
            return text
        text = shorter


def parse(text: str) -> Doc:
    doc = Doc()
    lines = text.splitlines()
    route: Route | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            match = ROUTE_HEADING.match(line)
            route = (match[1], normalize(match[2])) if match else None
            if route:
                doc.routes.append(route)
        elif line.startswith("```json"):
            end = lines.index("```", i + 1)
            schema = line.removeprefix("```json").strip()
            if schema:
                doc.examples.append((schema, json.loads("\n".join(lines[i + 1 : end]))))
            i = end
        elif line.startswith("|"):
            table = []
            while i < len(lines) and lines[i].startswith("|"):
                table.append(cells(lines[i]))
                i += 1
            header, rows = table[0], table[2:]
            named = FIELD_HEADER.match(header[0])
            default_col = header.index("default") if "default" in header else None
            if named:
                fields = [(r[0].strip("`"), r[default_col] if default_col else None) for r in rows]
                doc.field_tables.append((route, named[1], fields))
            elif header[0] == "parameter":
                assert route is not None, f"a parameter table outside a route: {header}"
                assert default_col is not None, "a parameter table needs a default column"
                doc.params[route] = [(r[0].strip("`"), r[1], r[default_col]) for r in rows]
            elif header[:2] == ["status", "code"]:
                doc.error_codes.update(r[1].strip("`") for r in rows)
            continue
        elif line.startswith("Responses:"):
            assert route is not None, f"Responses outside a route: {line}"
            paragraph = [line]
            while i + 1 < len(lines) and lines[i + 1].strip():
                i += 1
                paragraph.append(lines[i])
            joined = outside_parentheses(" ".join(paragraph).removeprefix("Responses:"))
            parts = re.split(r"\*\*(\d{3})\*\*", joined)[1:]
            doc.responses[route] = [
                (status, re.findall(r"`([^`]+)`", rest))
                for status, rest in zip(parts[::2], parts[1::2], strict=True)
            ]
        if route and "Body:" in line:
            doc.bodies[route] = re.findall(
                r"`([^`]+)`", re.split(r"[.:]\s", line.split("Body:")[1])[0]
            )
        i += 1
    return doc


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas `schema` may be: $refs followed, anyOf/allOf branches, list items."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return resolve(spec, spec["components"]["schemas"][name])
    found = []
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key, []):
            found += resolve(spec, branch)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        found += resolve(spec, schema["items"])
    if "properties" in schema:
        found.append(schema)
    return found


def lookup(
    spec: dict[str, Any], schema_name: str, path: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(parent object schema, property schema) of the dotted `path` in a component."""
    current: dict[str, Any] = {"$ref": f"#/components/schemas/{schema_name}"}
    parent: dict[str, Any] = {}
    for part in path.removesuffix("[]").replace("[]", "").split("."):
        parents = [s for s in resolve(spec, current) if part in s["properties"]]
        if not parents:
            return None
        parent, current = parents[0], parents[0]["properties"][part]
    return parent, current


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("api-doc") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNGAN_DATA_DIR", str(data_dir))
        # port 9 (discard) has no server: any connection attempt would raise
        mp.setenv("SNGAN_DATABASE_URL", "postgresql+psycopg://sngan@127.0.0.1:9/none")
        mp.setenv("SNGAN_BROKER_URL", "redis://127.0.0.1:9/0")
        get_settings.cache_clear()
        try:
            from app.main import create_app

            yield create_app().openapi()
        finally:
            get_settings.cache_clear()
    assert not data_dir.exists(), "building the OpenAPI document wrote to the data directory"


@pytest.fixture(scope="module")
def doc() -> Doc:
    parsed = parse(DOC.read_text())
    # the conventions above still hold: a reformatted doc must not pass by checking nothing
    assert len(parsed.routes) >= 15 and len(parsed.field_tables) >= 8, "docs/API.md unparsed"
    assert len(parsed.params) >= 4 and len(parsed.responses) >= 15 and parsed.examples
    return parsed


def operations(spec: dict[str, Any]) -> dict[Route, dict[str, Any]]:
    return {
        (method.upper(), normalize(path)): op
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }


def test_routes_match_both_ways(spec: dict[str, Any], doc: Doc) -> None:
    ops = operations(spec)
    missing = [f"{m} {p}" for m, p in doc.routes if (m, p) not in ops]
    assert not missing, f"docs/API.md names routes the app does not have: {missing}"
    undocumented = [f"{m} {p}" for m, p in ops if p.startswith("/v1/") and (m, p) not in doc.routes]
    assert not undocumented, f"/v1 routes missing from docs/API.md: {undocumented}"
    assert len(doc.routes) == len(set(doc.routes)), "a route is described twice"


def test_parameters_match_both_ways(spec: dict[str, Any], doc: Doc) -> None:
    ops = operations(spec)
    for route in doc.routes:
        params = {
            (p["name"].lower(), p["in"]): p
            for p in ops[route].get("parameters", [])
            if p["in"] in ("query", "header")
        }
        documented = doc.params.get(route, [])
        for name, where, default in documented:
            param = params.get((name.lower(), where))
            assert param is not None, f"{route}: no {where} parameter {name}"
            check_default(f"{route} {name}", param["schema"], default)
        names = {(n.lower(), w) for n, w, _ in documented}
        assert not set(params) - names, f"{route}: undocumented parameters {set(params) - names}"


def check_default(where: str, schema: dict[str, Any], cell: str | None) -> None:
    if cell is None or not re.fullmatch(r"`[^`]+`", cell):
        return  # prose or "—": nothing to compare
    # pydantic publishes no default for a default of None or a default_factory
    if "default" in schema:
        assert schema["default"] == json.loads(cell.strip("`")), f"{where}: default differs"


def test_fields_and_defaults_exist_in_their_schemas(spec: dict[str, Any], doc: Doc) -> None:
    for _route, schema, fields in doc.field_tables:
        assert schema in spec["components"]["schemas"], f"no schema {schema}"
        for path, default in fields:
            found = lookup(spec, schema, path)
            assert found is not None, f"{schema} has no field {path}"
            parent, prop = found
            required = path.rsplit(".", 1)[-1] in parent.get("required", [])
            if default is not None:
                assert required == (default == "required"), f"{schema}.{path}: required?"
            check_default(f"{schema}.{path}", prop, default)


def test_json_examples_use_only_schema_fields(spec: dict[str, Any], doc: Doc) -> None:
    def paths(value: Any, prefix: str = "") -> Iterator[str]:
        for key, inner in value.items() if isinstance(value, dict) else []:
            yield prefix + key
            yield from paths(inner, f"{prefix}{key}.")

    for schema, example in doc.examples:
        for path in paths(example):
            assert lookup(spec, schema, path) is not None, f"{schema} example: unknown {path}"


def app_string_constants() -> set[str]:
    strings = set()
    for source in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return strings


def test_responses_and_error_codes_exist(spec: dict[str, Any], doc: Doc) -> None:
    ops = operations(spec)
    schemas = spec["components"]["schemas"]
    in_code = app_string_constants()
    codes = set(doc.error_codes)
    assert set(doc.responses) == set(doc.routes), "every route lists its responses"
    for route, answers in doc.responses.items():
        for status, names in answers:
            response = ops[route]["responses"].get(status)
            assert response is not None, f"{route}: no {status} response in the OpenAPI document"
            content = response.get("content", {})
            for name in names:
                if name in schemas:
                    schema = content.get("application/json", {}).get("schema", {})
                    # one schema, or one of several (a query parameter picks the form)
                    refs = [s.get("$ref", "") for s in schema.get("anyOf", [schema])]
                    assert any(r.endswith(f"/{name}") for r in refs), (
                        f"{route} {status}: not a {name}"
                    )
                elif "/" in name:
                    assert any(t.startswith(name) for t in content), f"{route} {status}: {name}"
                else:
                    assert ERROR_CODE.fullmatch(name), f"{route} {status}: what is `{name}`?"
                    codes.add(name)
    unknown = sorted(codes - in_code)
    assert not unknown, f"error codes in docs/API.md that app/ never answers: {unknown}"


def test_request_bodies(spec: dict[str, Any], doc: Doc) -> None:
    ops = operations(spec)
    assert doc.bodies, "docs/API.md names no request body"
    for route, names in doc.bodies.items():
        content = ops[route]["requestBody"]["content"]
        media = next((n for n in names if "/" in n), "application/json")
        assert media in content, f"{route}: body is not {media}"
        body = content[media]["schema"]
        for name in names:
            if name == media:
                continue
            if "$ref" in body:
                assert body["$ref"].endswith(f"/{name}"), f"{route}: body is not {name}"
            else:
                assert name in body.get("properties", {}), f"{route}: no form field {name}"
