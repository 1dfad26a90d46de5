"""GoogleSQL semantic analysis of BigQuery statements with Google's ZetaSQL analyzer (PyPI `zetasql`, WebAssembly).

A `Catalog` holds BigQuery tables by project, dataset and name, typed as BigQuery types them; `SqlAnalyzer`
analyzes statements against it in order, and each CREATE TABLE/VIEW it accepts adds its output columns as the
analyzer resolved them, so a type error anywhere propagates to everything downstream. Nothing here needs
credentials or a network.

What differs from BigQuery, and why it is safe (each is said again where it is done):
- BigQuery's integer aliases (`bigint`, `int`, `integer`, `smallint`, `tinyint`, `byteint`) are unknown to
  ZetaSQL: they are rewritten to INT64 before analysis (`bigquery_aliases`); the rewritten text is what is dumped.
- ZetaSQL checks a statement's types and names, not BigQuery's quotas, DDL options' values or partition-filter
  requirements; those are what only a real project (preflight's dry run) proves.

The package's own Python wrappers convert every message to dataclasses and copy WebAssembly memory byte by byte
(0.2 s per statement with our catalog); this module talks to the same WebAssembly service with the generated
protobuf classes, registers the catalog once per change, and keeps the compiled module between runs (compiling
the 28 MB module takes 20-40 s on 2 cores; loading it back, under a second).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# BigQuery type names (JSON schemas, INFORMATION_SCHEMA) -> ZetaSQL type kinds, by name.
_SIMPLE_TYPES = {
    "STRING": "TYPE_STRING",
    "BYTES": "TYPE_BYTES",
    "INT64": "TYPE_INT64",
    "INTEGER": "TYPE_INT64",
    "FLOAT64": "TYPE_DOUBLE",
    "FLOAT": "TYPE_DOUBLE",
    "BOOL": "TYPE_BOOL",
    "BOOLEAN": "TYPE_BOOL",
    "NUMERIC": "TYPE_NUMERIC",
    "BIGNUMERIC": "TYPE_BIGNUMERIC",
    "DATE": "TYPE_DATE",
    "DATETIME": "TYPE_DATETIME",
    "TIME": "TYPE_TIME",
    "TIMESTAMP": "TYPE_TIMESTAMP",
    "JSON": "TYPE_JSON",
    "GEOGRAPHY": "TYPE_GEOGRAPHY",
    "INTERVAL": "TYPE_INTERVAL",
}
# BigQuery's INT64 aliases, which ZetaSQL's parser does not know as type names.
_INT_ALIASES = re.compile(r"\b(bigint|smallint|integer|tinyint|byteint|int)\b(?!\s*\()", re.IGNORECASE)
_STRING_OR_COMMENT = re.compile(
    r"""('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|`[^`]*`|--[^\n]*|\#[^\n]*|/\*.*?\*/)""",
    re.DOTALL,
)
# INFORMATION_SCHEMA.PARTITIONS, as dbt's incremental macros and latest_loaded_day read it.
PARTITIONS_COLUMNS = (
    ("table_catalog", "STRING"),
    ("table_schema", "STRING"),
    ("table_name", "STRING"),
    ("partition_id", "STRING"),
    ("total_rows", "INT64"),
    ("total_logical_bytes", "INT64"),
    ("total_billable_bytes", "INT64"),
    ("last_modified_time", "TIMESTAMP"),
    ("storage_tier", "STRING"),
)


def bigquery_aliases(sql: str) -> str:
    """Rewrite BigQuery's INT64 aliases to INT64 outside string literals, identifiers and comments."""
    parts = _STRING_OR_COMMENT.split(sql)
    # split with one capturing group: even indexes are code, odd ones the literals, identifiers and comments
    return "".join(part if i % 2 else _INT_ALIASES.sub("INT64", part) for i, part in enumerate(parts))


def zeta_type(bigquery_type: str, mode: str = "NULLABLE", fields: Sequence[dict[str, Any]] = ()) -> Any:
    """The ZetaSQL type (a TypeProto) of a BigQuery column given as in a JSON schema (type, mode, nested fields)."""
    from zetasql.wasi._pb2.zetasql.public import type_pb2

    name = bigquery_type.upper()
    if name in {"RECORD", "STRUCT"}:
        element = type_pb2.TypeProto(type_kind=type_pb2.TYPE_STRUCT)
        for f in fields:
            member = zeta_type(f["type"], f.get("mode", "NULLABLE"), f.get("fields", ()))
            element.struct_type.field.add(field_name=f["name"], field_type=member)
    elif name in _SIMPLE_TYPES:
        element = type_pb2.TypeProto(type_kind=getattr(type_pb2, _SIMPLE_TYPES[name]))
    else:
        raise ValueError(f"no ZetaSQL type for BigQuery type {bigquery_type}")
    if mode.upper() != "REPEATED":
        return element
    array = type_pb2.TypeProto(type_kind=type_pb2.TYPE_ARRAY)
    array.array_type.element_type.CopyFrom(element)
    return array


@dataclass
class Catalog:
    """BigQuery tables by (project, dataset, name), reachable the ways BigQuery resolves names:
    `project`.`dataset`.`table`, `project.dataset.table`, dataset.table (the default project) and, with a
    default dataset, a bare table name; plus each dataset's INFORMATION_SCHEMA.PARTITIONS."""

    project: str
    default_dataset: str | None = None
    tables: dict[tuple[str, str, str], list[tuple[str, Any]]] = field(default_factory=dict)
    datasets: set[str] = field(default_factory=set)  # of the project: present even with no table yet
    version: int = 0  # bumped on every change, so an analyzer knows to register the catalog again

    def add(self, dataset: str, name: str, columns: Iterable[tuple[str, Any]], project: str | None = None) -> None:
        """Add (or replace) a table; `columns` are (name, TypeProto) pairs."""
        self.tables[(project or self.project, dataset, name)] = list(columns)
        self.version += 1

    def add_schema(self, dataset: str, name: str, schema: Sequence[dict[str, Any]]) -> None:
        """Add a table from a BigQuery JSON schema (what Terraform and `bq` take)."""
        columns = [(f["name"], zeta_type(f["type"], f.get("mode", "NULLABLE"), f.get("fields", ()))) for f in schema]
        self.add(dataset, name, columns)

    def proto(self, language: Any) -> Any:
        """The catalog as a SimpleCatalogProto, with BigQuery's name paths and the builtin functions."""
        from zetasql.wasi._pb2.zetasql.proto import simple_catalog_pb2

        def add_table(catalog: Any, name: str, columns: list[tuple[str, Any]]) -> None:
            table = catalog.table.add(name=name)
            for column, kind in columns:
                table.column.add(name=column, type=kind)

        partitions = [(c, zeta_type(t)) for c, t in PARTITIONS_COLUMNS]
        root = simple_catalog_pb2.SimpleCatalogProto(name="bigquery")
        root.builtin_function_options.language_options.CopyFrom(language)
        by_project: dict[str, dict[str, list[tuple[str, list[tuple[str, Any]]]]]] = {
            self.project: {dataset: [] for dataset in self.datasets}
        }
        for (project, dataset, name), columns in sorted(self.tables.items()):
            by_project.setdefault(project, {}).setdefault(dataset, []).append((name, columns))
            add_table(root, f"{project}.{dataset}.{name}", columns)  # `project.dataset.table`
            if project == self.project:
                add_table(root, f"{dataset}.{name}", columns)  # `dataset.table`
                if dataset == self.default_dataset:
                    add_table(root, name, columns)

        def add_dataset(parent: Any, dataset: str, tables: list[tuple[str, list[tuple[str, Any]]]]) -> None:
            catalog = parent.catalog.add(name=dataset)
            for name, columns in tables:
                add_table(catalog, name, columns)
            add_table(catalog.catalog.add(name="INFORMATION_SCHEMA"), "PARTITIONS", partitions)

        for project, datasets in sorted(by_project.items()):
            project_catalog = root.catalog.add(name=project)
            for dataset, tables in sorted(datasets.items()):
                add_dataset(project_catalog, dataset, tables)
        for dataset, tables in sorted(by_project.get(self.project, {}).items()):
            add_dataset(root, dataset, tables)  # dataset.table in the default project
        return root


@dataclass(frozen=True)
class Analyzed:
    """One statement's outcome: the analyzer's message when it rejected it, and the table it created, if any."""

    error: str | None
    created: tuple[str, str, str] | None = None
    columns: tuple[tuple[str, Any], ...] = ()


class SqlAnalyzer:
    """Analyze BigQuery statements in order against a `Catalog`; CREATE TABLE/VIEW outputs join the catalog."""

    def __init__(self, catalog: Catalog, *, cache_dir: Path | None = None) -> None:
        from zetasql.wasi._pb2.zetasql.local_service import local_service_pb2
        from zetasql.wasi._pb2.zetasql.proto import options_pb2
        from zetasql.wasi._pb2.zetasql.public import options_pb2 as public_options_pb2

        self.catalog = catalog
        self._pb = local_service_pb2
        self._client = wasm_client(cache_dir)
        self.language = self._call(
            "GetLanguageOptions", local_service_pb2.LanguageOptionsRequest(maximum_features=True),
            options_pb2.LanguageOptionsProto,
        )  # fmt: skip
        # BigQuery is ZetaSQL's external product mode: no INT32, UINT or PROTO types, and so on.
        self.language.product_mode = public_options_pb2.PRODUCT_EXTERNAL
        del self.language.supported_statement_kinds[:]  # empty: every kind (CREATE, DROP, DML, ...)
        # one line with the position, `... [at 12:5]`, as BigQuery reports it
        self.options = options_pb2.AnalyzerOptionsProto(
            default_timezone="UTC", error_message_mode=public_options_pb2.ERROR_MESSAGE_ONE_LINE
        )
        self.options.language_options.CopyFrom(self.language)
        self._registered: tuple[int, int] | None = None  # (catalog version, registered id)

    def analyze(self, sql: str) -> Analyzed:
        """Analyze one statement; register what it creates in the catalog."""
        from zetasql.core.exceptions import ServerError

        request = self._pb.AnalyzeRequest(sql_statement=sql, registered_catalog_id=self._catalog_id())
        request.options.CopyFrom(self.options)
        try:
            response = self._call("Analyze", request, self._pb.AnalyzeResponse)
        except ServerError as exc:
            return Analyzed(error=_message(exc))
        created = _created(response.resolved_statement)
        if created is None:
            return Analyzed(error=None)
        path, columns = created
        project, dataset, name = table_path(path, self.catalog)
        self.catalog.add(dataset, name, columns, project=project)
        return Analyzed(error=None, created=(project, dataset, name), columns=tuple(columns))

    def close(self) -> None:
        if self._registered is not None:
            self._call("UnregisterCatalog", self._pb.UnregisterRequest(registered_id=self._registered[1]))
            self._registered = None

    def _catalog_id(self) -> int:
        if self._registered is not None and self._registered[0] == self.catalog.version:
            return self._registered[1]
        self.close()
        request = self._pb.RegisterCatalogRequest(simple_catalog=self.catalog.proto(self.language))
        registered = self._call("RegisterCatalog", request, self._pb.RegisterResponse).registered_id
        self._registered = (self.catalog.version, registered)
        return registered

    def _call(self, method: str, request: Any, response_type: Any = None) -> Any:
        from google.protobuf import empty_pb2

        return self._client.call_grpc_func(f"ZetaSqlLocalService_{method}", request, response_type or empty_pb2.Empty)


def _created(statement: Any) -> tuple[list[str], list[tuple[str, Any]]] | None:
    """(name path, output columns) of a CREATE TABLE ... AS / CREATE VIEW, else None."""
    node = statement
    while type(node).__name__.startswith("AnyResolved"):  # down the Any*Proto wrappers to the concrete node
        branch = node.WhichOneof("node")
        if branch is None:
            return None
        node = getattr(node, branch)
    kind = type(node).__name__
    if not kind.startswith(("ResolvedCreateTable", "ResolvedCreateView", "ResolvedCreateMaterializedView")):
        return None
    columns: list[tuple[str, Any]] = []
    path: list[str] = []
    while node is not None:  # up the parent chain: the base classes hold the fields
        names = {f.name for f, _ in node.ListFields()}
        if "column_definition_list" in names and not columns:
            columns = [(c.name, c.type) for c in node.column_definition_list]
        if "output_column_list" in names and not columns:
            columns = [(c.name, c.column.type) for c in node.output_column_list]
        if "name_path" in names:
            path = list(node.name_path)
        node = node.parent if "parent" in names else None
    return path, columns


def table_path(path: list[str], catalog: Catalog) -> tuple[str, str, str]:
    if len(path) >= 3:  # `project`.`dataset`.`table`; a project may hold dots (`example.com:my-project`)
        return path[-3], path[-2], path[-1]
    # `project.dataset.table` or `dataset.table` as one identifier: the table and the dataset have no dots
    parts = path[0].rsplit(".", 2) if len(path) == 1 else [*path[0].rsplit(".", 1), path[1]]
    if len(parts) >= 3:
        return ".".join(parts[:-2]), parts[-2], parts[-1]
    if len(parts) == 2:
        return catalog.project, parts[0], parts[1]
    return catalog.project, catalog.default_dataset or "", parts[0]


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    text = re.sub(r"^\[[A-Z_]+\]\s*", "", text)  # the status code prefix
    return " ".join(text.split())


_CLIENT: Any = None


def wasm_client(cache_dir: Path | None) -> Any:
    """One WebAssembly instance of ZetaSQL's local service per process, its compiled module cached on disk."""
    global _CLIENT
    if _CLIENT is None:
        import atexit

        _CLIENT = _load_client(cache_dir)
        atexit.register(_release_client)
    return _CLIENT


def _release_client() -> None:
    """Free the WebAssembly instance while the interpreter still works: wasmtime's finalizers, run during
    shutdown instead, find their C bindings gone and print a traceback each."""
    import gc

    global _CLIENT
    _CLIENT = None
    gc.collect()


def _load_client(cache_dir: Path | None) -> Any:
    import ctypes
    import hashlib
    import os
    import tempfile
    from importlib.metadata import version
    from unittest import mock

    import wasmtime
    import zetasql
    from zetasql.core.wasm_client import WasmClient
    from zetasql.wasi import get_wasm_path

    class FastWasmClient(WasmClient):
        """The package's client, with memory copied in one call instead of byte by byte."""

        def _base(self, ptr: int, size: int) -> int:
            if ptr < 0 or ptr + size > self.memory.data_len():  # the memory may have grown: ask each time
                raise IndexError(f"{size} bytes at {ptr} lie outside the WebAssembly memory")
            return ctypes.addressof(self.memory.data_ptr().contents) + ptr

        def write_bytes(self, ptr: int, data: bytes) -> None:
            ctypes.memmove(self._base(ptr, len(data)), data, len(data))

        def read_bytes(self, ptr: int, size: int) -> bytes:
            return ctypes.string_at(self._base(ptr, size), size)

    wasm = Path(get_wasm_path())
    compile_module = wasmtime.Module.from_file

    def cached_module(engine: Any, path: str) -> Any:
        if cache_dir is None:
            return compile_module(engine, path)
        stat = wasm.stat()
        # compiled code is tied to the wasm file and to the wasmtime that compiled it
        identity = f"{zetasql.__version__}|{stat.st_size}|{stat.st_mtime_ns}|{version('wasmtime')}"
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        cached = cache_dir / f"zetasql-{key}.cwasm"
        if cached.exists():
            try:
                return wasmtime.Module.deserialize_file(engine, str(cached))
            except Exception:  # another wasmtime or a damaged file: compile again
                cached.unlink(missing_ok=True)
        module = compile_module(engine, path)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(module.serialize())
            os.replace(tmp, cached)  # atomic: a parallel process reads the old file or the whole new one
        except OSError:  # a read-only or full cache folder: the next run compiles again, nothing else is lost
            pass
        return module

    with mock.patch.object(wasmtime.Module, "from_file", staticmethod(cached_module)):
        return FastWasmClient(wasm_path=str(wasm))
