"""The GCS lake against fake-gcs-server: the local lake's semantics, generation-guarded writes, one-line errors.

Buckets are created with versioning on, so every generation an upload makes stays countable: a duplicate
write shows up as an extra version even though a bucket can only hold one live object per name.
"""

from __future__ import annotations

import io
import json
import os
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests

import flows.standin.replies as stub_replies
from flows.errors import ConfigError, StorageError
from flows.ingest.extract import extract_dataset
from flows.lake.factory import lake_storage
from flows.lake.gcs import GcsStorage
from flows.lake.storage import LakeStorage, LocalStorage
from flows.settings import Settings
from flows.snapshot_id import Snapshot
from flows.standin import Catalog, StubServer
from tests.conftest import API_KEY, fast_settings
from tests.gcs_server import PROJECT, FakeGcsServer

DATASETS = ("assets", "rates", "exchanges", "markets")
KEY = "coincap/assets/dt=2026-11-21/20261121T053000Z.parquet"


@pytest.fixture
def bucket(gcs_emulator: FakeGcsServer) -> str:
    return gcs_emulator.create_bucket(versioning=True)


@pytest.fixture
def lake(bucket: str) -> GcsStorage:
    """A lake whose client is created lazily from the environment, as in production (here: the emulator)."""
    return GcsStorage(bucket, project=PROJECT, retry_deadline_s=5, retry_initial_delay_s=0.01)


def staged(tmp_path: Path, content: bytes, name: str = "staged.parquet") -> Path:
    path = tmp_path / "staging" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def versions(server: FakeGcsServer, bucket: str) -> Counter[str]:
    """How many generations of each object the bucket holds (live and noncurrent)."""
    # Raw REST: the python client sends `versions=True`, which fake-gcs-server does not read as true.
    names: Counter[str] = Counter()
    token = ""
    while True:
        url = f"{server.url}/storage/v1/b/{bucket}/o?versions=true" + (f"&pageToken={token}" if token else "")
        with urllib.request.urlopen(url, timeout=5) as resp:
            page = json.load(resp)
        names.update(item["name"] for item in page.get("items", []))
        token = page.get("nextPageToken", "")
        if not token:
            return names


def write_behind(lake: GcsStorage, key: str, payloads: list[bytes]) -> list[int]:
    """Make `lake.generation` let another writer replace `key` right after each read; return the reads' values."""
    other = lake.client.bucket(lake.bucket_name)
    real = lake.generation
    seen: list[int] = []

    def racing(k: str, **kwargs: Any) -> int:
        generation = real(k, **kwargs)
        seen.append(generation)
        if k == key and payloads:
            other.blob(lake._name(k)).upload_from_string(payloads.pop(0))
        return generation

    lake.generation = racing  # type: ignore[method-assign]
    return seen


class ScriptedSession(requests.Session):
    """A real HTTP session that records every request and answers the first `fail` of those matching `only`."""

    def __init__(self, fail: int = 0, status: int = 503, message: str = "backend error", only: str = "") -> None:
        super().__init__()
        self.fail, self.status, self.message, self.only = fail, status, message, only
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls.append((method, url))
        if self.fail > 0 and self.only in f"{method} {url}":
            self.fail -= 1
            response = requests.Response()
            response.status_code = self.status
            response._content = json.dumps({"error": {"code": self.status, "message": self.message}}).encode()
            response.headers["Content-Type"] = "application/json"
            response.url = url
            response.request = requests.Request(method, url).prepare()
            return response
        return super().request(method, url, *args, **kwargs)


def scripted_lake(bucket: str, session: ScriptedSession, **kwargs: Any) -> GcsStorage:
    from google.cloud import storage

    client = storage.Client(project=PROJECT, _http=session)
    return GcsStorage(bucket, client=client, retry_deadline_s=5, retry_initial_delay_s=0.01, **kwargs)


# -- the LakeStorage protocol, side by side with the local lake --------------------------------------------------


def exercise(storage: LakeStorage, tmp_path: Path) -> list[object]:
    """Drive a lake through the protocol and record what a caller observes."""
    seen: list[object] = [isinstance(storage, LakeStorage)]
    other = "coincap/assets/dt=2026-11-22/20261122T053000Z.parquet"
    rates = "coincap/rates/dt=2026-11-21/20261121T053000Z.parquet"
    first = staged(tmp_path, b"first")
    storage.put_file(first, KEY)
    seen += [first.exists(), storage.exists(KEY), storage.read_bytes(KEY)]
    storage.put_file(staged(tmp_path, b"second"), KEY)  # a replay replaces, never adds
    storage.put_file(staged(tmp_path, b"other"), other)
    storage.put_file(staged(tmp_path, b"rates"), rates)
    seen += [storage.read_bytes(KEY), storage.list("coincap")]
    seen += [storage.list(p) for p in ("coincap/", "coincap/assets/", "coincap/assets", KEY, "coinc", "nowhere/", "")]
    storage.delete(KEY)
    storage.delete(KEY)  # absent: no error
    storage.delete("coincap/markets/dt=2026-11-21/never.parquet")
    seen += [storage.exists(KEY), storage.list("coincap/assets")]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(KEY)
    return seen


def test_gcs_lake_behaves_as_the_local_lake(tmp_path, lake, bucket, gcs_emulator):
    local = exercise(LocalStorage(tmp_path / "lake"), tmp_path / "l")
    remote = exercise(lake, tmp_path / "g")
    assert remote == local
    assert remote[:4] == [True, False, True, b"first"], "the published file leaves staging, as a local move does"
    assert remote[5] == sorted(remote[5]) and len(remote[5]) == 3
    assert lake.root_uri == f"gs://{bucket}"
    # exactly one generation per put: first, second (replace), other, rates
    assert versions(gcs_emulator, bucket) == Counter({KEY: 2, remote[5][1]: 1, remote[5][2]: 1})


def test_prefix_keeps_keys_relative(tmp_path, bucket):
    lake = GcsStorage(bucket, project=PROJECT, prefix="/lakes/prod/")
    lake.put_file(staged(tmp_path, b"x"), KEY)
    assert lake.root_uri == f"gs://{bucket}/lakes/prod"
    assert lake.list("") == [KEY] and lake.list("coincap") == [KEY]
    assert lake.client.bucket(bucket).get_blob(f"lakes/prod/{KEY}") is not None
    assert GcsStorage(bucket, project=PROJECT).list("coincap") == []


@pytest.mark.parametrize("key", ["../outside", "/abs/key", "a//b", "a/./b", ""])
def test_keys_that_do_not_map_onto_the_local_layout_are_refused(lake, key):
    with pytest.raises(StorageError, match="Refusing lake key"):
        lake.exists(key)


# -- generation preconditions ------------------------------------------------------------------------------------


def test_a_concurrent_write_between_read_and_upload_is_retried_never_clobbered(tmp_path, lake, bucket, gcs_emulator):
    lake.put_file(staged(tmp_path, b"v0"), KEY)
    seen = write_behind(lake, KEY, [b"theirs"])
    lake.put_file(staged(tmp_path, b"ours"), KEY)
    assert len(seen) == 2 and seen[0] != seen[1], "the 412 made it re-read the generation and try again"
    assert lake.read_bytes(KEY) == b"ours"
    assert lake.list("") == [KEY]
    assert versions(gcs_emulator, bucket)[KEY] == 3, "v0, theirs, ours: one write of ours, no duplicate"


def test_a_writer_racing_every_attempt_surfaces_one_error_after_bounded_retries(tmp_path, bucket, gcs_emulator):
    lake = GcsStorage(bucket, project=PROJECT, precondition_attempts=3)
    path = staged(tmp_path, b"ours")
    seen = write_behind(lake, KEY, [b"theirs-1", b"theirs-2", b"theirs-3", b"theirs-4"])
    with pytest.raises(StorageError) as err:
        lake.put_file(path, KEY)
    assert "kept changing" in str(err.value) and "\n" not in str(err.value)
    assert len(seen) == 3
    assert lake.read_bytes(KEY) == b"theirs-3", "their last version stays: nothing was overwritten unseen"
    assert versions(gcs_emulator, bucket)[KEY] == 3, "none of ours"
    assert path.exists(), "the staged file is kept for the retry"


def test_identical_bytes_already_there_count_as_written(tmp_path, lake, bucket, gcs_emulator):
    # What a lost response looks like: our bytes landed, the retried upload gets 412.
    seen = write_behind(lake, KEY, [b"ours"])
    lake.put_file(staged(tmp_path, b"ours"), KEY)
    assert len(seen) == 1
    assert versions(gcs_emulator, bucket)[KEY] == 1


def test_delete_removes_only_the_version_it_saw(tmp_path, bucket):
    # fake-gcs-server ignores preconditions on DELETE, so the server's 412 is scripted here.
    session = ScriptedSession(fail=1, status=412, message="Precondition failed", only="DELETE ")
    lake = scripted_lake(bucket, session)
    lake.put_file(staged(tmp_path, b"old"), KEY)
    generation = lake.generation(KEY)
    lake.delete(KEY)
    deletes = [url for method, url in session.calls if method == "DELETE"]
    assert len(deletes) == 2 and all(f"ifGenerationMatch={generation}" in url for url in deletes)
    assert not lake.exists(KEY)


def test_an_object_gone_before_its_delete_is_not_an_error(tmp_path, bucket):
    session = ScriptedSession(fail=1, status=404, message="No such object", only="DELETE ")
    lake = scripted_lake(bucket, session)
    lake.put_file(staged(tmp_path, b"old"), KEY)
    lake.delete(KEY)
    assert session.fail == 0


# -- transfer: resumable uploads and transient errors -------------------------------------------------------------


def test_files_above_the_threshold_go_up_resumable_in_chunks(tmp_path, bucket):
    session = ScriptedSession()
    lake = scripted_lake(bucket, session, resumable_threshold=512 * 1024, chunk_size=256 * 1024)
    data = os.urandom(1_300_000)
    lake.put_file(staged(tmp_path, data), KEY)
    assert lake.read_bytes(KEY) == data
    starts = [url for method, url in session.calls if method == "POST" and "/upload/" in url]
    chunks = [url for method, url in session.calls if method == "PUT"]
    assert len(starts) == 1 and "uploadType=resumable" in starts[0] and "ifGenerationMatch=0" in starts[0]
    assert len(chunks) == 5, "1.3 MB in 256 KiB chunks"

    session.calls.clear()
    lake.put_file(staged(tmp_path, b"small"), KEY)
    uploads = [url for method, url in session.calls if "/upload/" in url]
    assert len(uploads) == 1 and "uploadType=multipart" in uploads[0]
    assert lake.read_bytes(KEY) == b"small"


def test_default_threshold_uploads_a_big_file_resumably(tmp_path, bucket):
    session = ScriptedSession()
    lake = scripted_lake(bucket, session)
    data = os.urandom(9 * 1024 * 1024)
    lake.put_file(staged(tmp_path, data), KEY)
    assert any("uploadType=resumable" in url for _, url in session.calls)
    assert sum(method == "PUT" for method, _ in session.calls) == 2, "8 MiB chunks"
    assert lake.read_bytes(KEY) == data


@pytest.mark.parametrize("only", ["GET ", "POST http://127.0.0.1"])
def test_transient_errors_are_retried_and_write_once(tmp_path, bucket, gcs_emulator, only):
    session = ScriptedSession(fail=3, status=503, only=only)  # on the generation read, then on the upload itself
    lake = scripted_lake(bucket, session)
    lake.put_file(staged(tmp_path, b"ours"), KEY)
    assert session.fail == 0 and sum(only in f"{m} {u}" for m, u in session.calls) == 4
    assert lake.read_bytes(KEY) == b"ours"
    assert versions(gcs_emulator, bucket)[KEY] == 1


def test_gcs_failing_past_the_deadline_is_one_line(tmp_path, bucket):
    lake = scripted_lake(bucket, ScriptedSession(fail=10_000, status=503))
    lake.retry_deadline_s = 0.3
    with pytest.raises(StorageError, match=r"GCS kept failing for 0.3s while trying to write gs://") as err:
        lake.put_file(staged(tmp_path, b"x"), KEY)
    assert "\n" not in str(err.value) and "same snapshot id" in str(err.value)


# -- errors for people --------------------------------------------------------------------------------------------


def test_missing_bucket_is_one_line_that_says_what_to_do(tmp_path, gcs_emulator):
    lake = GcsStorage("no-such-lake-bucket", project=PROJECT, retry_deadline_s=2)
    expected = (
        "GCS bucket no-such-lake-bucket does not exist or is not visible to these credentials. "
        "Run `terraform apply` (terraform/envs/prod) or set GCS_BUCKET."
    )
    for call in (lambda: lake.put_file(staged(tmp_path, b"x"), KEY), lambda: lake.list("coincap/"),
                 lambda: lake.read_bytes(KEY)):  # fmt: skip
        with pytest.raises(StorageError) as err:
            call()
        assert str(err.value) == expected


@pytest.mark.parametrize(
    ("action", "role"), [("put", "roles/storage.objectAdmin"), ("list", "roles/storage.objectViewer")]
)
def test_permission_denied_names_the_missing_role(tmp_path, bucket, action, role):
    lake = scripted_lake(bucket, ScriptedSession(fail=100, status=403, message="caller lacks storage.objects.x"))
    with pytest.raises(StorageError, match=role) as err:
        lake.put_file(staged(tmp_path, b"x"), KEY) if action == "put" else lake.list("coincap")
    assert "\n" not in str(err.value)


# -- the factory --------------------------------------------------------------------------------------------------


def test_factory_builds_a_lazy_gcs_lake_for_the_gcp_target(monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    settings = Settings(PIPELINE_TARGET="gcp", GCS_BUCKET="gs://example-lake", GCP_PROJECT_ID=PROJECT)  # type: ignore[call-arg]
    storage = lake_storage(settings)
    assert isinstance(storage, GcsStorage) and isinstance(storage, LakeStorage)
    assert (storage.root_uri, storage.project) == ("gs://example-lake", PROJECT)
    assert storage._client is None, "no credentials are needed until the lake is used"


@pytest.mark.parametrize("bucket_value", [None, "", "example-lake/sub"])
def test_factory_refuses_a_missing_or_malformed_bucket(monkeypatch, bucket_value):
    monkeypatch.delenv("GCS_BUCKET", raising=False)
    settings = Settings(PIPELINE_TARGET="gcp", GCS_BUCKET=bucket_value, GCP_PROJECT_ID=PROJECT)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="GCS_BUCKET") as err:
        lake_storage(settings)
    assert "\n" not in str(err.value)


# -- the bar: same served data, same lake; a replay adds nothing -------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A CoinCap stand-in with some invalid records (so quarantine files exist) and a frozen API clock."""
    monkeypatch.setattr(stub_replies, "now_ms", lambda: 1_795_238_400_000)  # the same `timestamp` every call
    catalog = Catalog.synthetic(n_assets=300, n_exchanges=20, n_markets=3000, seed=7, invalid_fraction=0.03)
    with StubServer(catalog, api_keys={API_KEY}) as server:
        yield server


def extract_and_publish(settings: Settings, snapshot: Snapshot, storage: LakeStorage) -> list[str]:
    keys = []
    for dataset in DATASETS:
        _, files = extract_dataset(dataset, snapshot, settings=settings)
        keys += files.publish(storage)
    return keys


def gcs_table_rows(lake: GcsStorage, key: str) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(lake.read_bytes(key))).to_pylist()


def test_same_served_data_gives_the_same_objects_and_rows_and_a_replay_adds_nothing(
    tmp_path, served, lake, bucket, gcs_emulator
):
    settings = fast_settings(tmp_path / "data", served.base_url)
    snapshot = Snapshot.parse("20261121T053000Z")
    local = LocalStorage(tmp_path / "local-lake")

    extract_and_publish(settings, snapshot, local)
    written = extract_and_publish(settings, snapshot, lake)
    keys = local.list("")
    assert lake.list("") == keys == sorted(written)
    assert any(k.startswith("quarantine/") for k in keys) and len(keys) == 8
    for key in keys:
        local_rows = pq.read_table(local.root / key).to_pylist()
        assert gcs_table_rows(lake, key) == local_rows, key
        assert local_rows, f"{key} is not empty"
    assert not list((settings.data_dir / "staging").iterdir()), "published files left staging"

    before = {key: lake.generation(key) for key in keys}
    rows = {key: len(gcs_table_rows(lake, key)) for key in keys}
    extract_and_publish(settings, snapshot, lake)
    assert lake.list("") == keys, "a replay adds no object"
    assert {key: len(gcs_table_rows(lake, key)) for key in keys} == rows
    assert all(lake.generation(key) != before[key] for key in keys), "each object was replaced"
    assert versions(gcs_emulator, bucket) == Counter(dict.fromkeys(keys, 2)), "exactly one new generation each"
