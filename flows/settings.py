"""One settings object for the whole pipeline, read from the environment (and `.env`) and CLI flags.

Nothing else in the project reads `os.environ` for configuration: every stage gets a `Settings`.
"""

from __future__ import annotations

import logging
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flows.errors import ConfigError
from flows.redaction import redact, register_secret

DEFAULT_BASE_URL = "https://rest.coincap.io/v3"
KEY_HOWTO = 'printf %s "$KEY" | gcloud secrets versions add coincap-api-key --data-file=- (echo adds a newline)'

log = logging.getLogger(__name__)


def clean_api_key(raw: str) -> str | None:
    """A CoinCap key as given (env, `.env`, Secret Manager), stripped of surrounding whitespace (a newline from
    `echo $KEY | gcloud secrets versions add ...`); None if nothing is left.

    Registers every form of it for redaction first, and raises ValueError (a sentence that never quotes the key)
    when whitespace or a control character is left inside: an HTTP header cannot carry it, and the error that
    says so would quote the key.
    """
    register_secret(raw)
    key = raw.strip()
    if not key:
        return None
    if any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise ValueError(
            "it contains a space, newline, control or non-ASCII character inside the key (not just around it); "
            f"set it without them, e.g. {KEY_HOWTO}"
        )
    if key != raw:
        _notice(
            "COINCAP_API_KEY had whitespace around it (a trailing newline?): stripped. Store it without, e.g. "
            + KEY_HOWTO
        )
    return key


def url_has_credentials(url: str) -> bool:
    """Whether a URL carries `user:password@` (or `user@`) before its host."""
    try:
        return "@" in urlsplit(url.strip()).netloc
    except ValueError:
        return "@" in url.split("/", 3)[2] if url.count("/") >= 2 else False


_notices: list[str] = []
_notices_lock = threading.Lock()


def _notice(line: str) -> None:
    """A one-line warning about the settings, logged once per process by `flush_notices` (configure_logging
    calls it once the log handlers are in place, so a JSON-lines run logs it as JSON)."""
    with _notices_lock:
        if line not in _notices:
            _notices.append(line)


_flushed: set[str] = set()


def flush_notices() -> None:
    """Log the pending settings notices, each once per process."""
    with _notices_lock:
        pending = [n for n in _notices if n not in _flushed]
        _flushed.update(pending)
    for line in pending:
        log.warning("%s", line)


class Target(StrEnum):
    """Where the lake and the warehouse live."""

    local = "local"
    gcp = "gcp"


class Settings(BaseSettings):
    """Pipeline configuration. Environment variables use the names given in `alias`."""

    # hide_input_in_errors: a refused value (a key with a newline, a URL with a password) is never echoed.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    api_key: SecretStr | None = Field(default=None, alias="COINCAP_API_KEY")
    api_base_url: str = Field(default=DEFAULT_BASE_URL, alias="COINCAP_API_BASE_URL")
    target: Target = Field(default=Target.local, alias="PIPELINE_TARGET")
    data_dir: Path = Field(default=Path("data"), alias="PIPELINE_DATA_DIR")
    # Rebuildable artefacts shared by every data folder (the SQL analyzer's compiled WebAssembly module).
    cache_dir: Path = Field(default=Path.home() / ".cache" / "coincap-pipeline", alias="PIPELINE_CACHE_DIR")

    # HTTP behaviour. Defaults follow CoinCap's published limits (600 calls/min, pages of at most 2000).
    page_limit: int = Field(default=2000, ge=1, le=2000, alias="COINCAP_PAGE_LIMIT")
    connect_timeout_s: float = Field(default=5.0, gt=0, alias="COINCAP_CONNECT_TIMEOUT")
    read_timeout_s: float = Field(default=30.0, gt=0, alias="COINCAP_READ_TIMEOUT")
    max_attempts: int = Field(default=6, ge=1, le=20, alias="COINCAP_MAX_ATTEMPTS")
    backoff_base_s: float = Field(default=0.5, ge=0, alias="COINCAP_BACKOFF_BASE")
    backoff_max_s: float = Field(default=30.0, ge=0, alias="COINCAP_BACKOFF_MAX")
    max_retry_after_s: float = Field(default=120.0, ge=0, alias="COINCAP_MAX_RETRY_AFTER")
    # One attempt of a CoinCap call in total (connect, redirects, the whole body); the read timeout is per socket read.
    call_deadline_s: float = Field(default=120.0, gt=0, alias="COINCAP_CALL_DEADLINE")
    # The largest answer accepted, counted as received and as decoded (a gzip bomb); a larger one is refused.
    max_body_bytes: int = Field(default=32 * 1024**2, ge=1, alias="COINCAP_MAX_BODY_BYTES")
    # The response header in which the server says what a call cost, when it sends one (CoinCap documents none
    # today; the byte rule is used then). Billed above the byte rule, the meter and the budgets follow it.
    billing_header: str = Field(default="X-Credits-Used", alias="COINCAP_BILLING_HEADER")

    # Scope: what a snapshot fetches. Empty means everything the endpoint lists.
    assets_limit: int | None = Field(default=None, ge=1, alias="COINCAP_ASSETS_LIMIT")  # top-N assets by rank
    # Comma lists (`binance,kraken`), not JSON: NoDecode hands the raw string to `_split_csv`.
    markets_exchange_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="COINCAP_MARKETS_EXCHANGES"
    )
    markets_quote_ids: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="COINCAP_MARKETS_QUOTES")

    # Google Cloud target. Credentials are Application Default Credentials, never settings.
    gcp_project: str | None = Field(default=None, alias="GCP_PROJECT_ID")
    gcs_bucket: str | None = Field(default=None, alias="GCS_BUCKET")
    bq_location: str = Field(default="US", alias="BQ_LOCATION")
    bq_dataset_prefix: str = Field(default="coincap_", alias="BQ_DATASET_PREFIX")
    bq_api_endpoint: str | None = Field(default=None, alias="BQ_API_ENDPOINT")  # an emulator, in tests
    # Ad-hoc SQL (`coincap-pipeline sql` on gcp) refuses queries that would bill more than this.
    bq_max_bytes_billed: int | None = Field(default=10 * 1024**3, ge=1, alias="BQ_MAX_BYTES_BILLED")
    api_key_secret: str = Field(default="coincap-api-key", alias="COINCAP_API_KEY_SECRET")
    work_pool: str = Field(default="coincap-cloud-run", alias="PIPELINE_WORK_POOL")

    # Retention: granular data (snapshots, ticks, quarantine) is kept this many days; daily aggregates forever.
    # Terraform's granular_retention_days defaults to the same number (GCS lifecycle, staging partitions), and dbt
    # receives it as the marts' partition expiration (flows/warehouse/dbt.py). At least 31: fct_asset_daily's
    # incremental run recomputes its latest day's 30-day windows from granular data.
    granular_retention_days: int = Field(default=365, ge=31, alias="PIPELINE_GRANULAR_RETENTION_DAYS")

    # Prefect task retries wait what each task declares (5 s to 300 s) times this; 0 retries at once, without
    # jitter (the fault suite and tests: the retries still happen, only the waits go).
    task_retry_delay_scale: float = Field(default=1.0, ge=0, alias="PIPELINE_TASK_RETRY_DELAY_SCALE")

    dbt_threads: int = Field(default=2, ge=1, alias="PIPELINE_DBT_THREADS")
    dbt_project_dir: Path | None = Field(default=None, alias="PIPELINE_DBT_PROJECT_DIR")

    # Observability. Alerts go to a Slack-compatible incoming webhook (a secret: its path is the credential);
    # unset, they are only logged. `json` logs one JSON object per line (Cloud Logging parses them).
    alert_webhook_url: SecretStr | None = Field(default=None, alias="PIPELINE_ALERT_WEBHOOK_URL")
    log_format: Literal["text", "json"] = Field(default="text", alias="PIPELINE_LOG_FORMAT")

    # Data-quality checks (flows/quality/). Freshness: hours a dataset's latest snapshot may age before its check
    # fails; unset, twice the longest gap between the deployments' scheduled runs plus an hour (49 h for daily).
    dq_freshness_hours: float | None = Field(default=None, gt=0, alias="PIPELINE_DQ_FRESHNESS_HOURS")
    # A price move since the previous snapshot larger than this is flagged (a warning; the row is kept).
    dq_price_jump_pct: float = Field(default=50.0, gt=0, alias="PIPELINE_DQ_PRICE_JUMP_PCT")
    # More records of a dataset rejected by its contract than this share fails the snapshot's quality.
    dq_max_quarantine_pct: float = Field(default=2.0, ge=0, le=100, alias="PIPELINE_DQ_MAX_QUARANTINE_PCT")

    @field_validator("api_key", mode="before")
    @classmethod
    def _clean_key(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        try:
            return clean_api_key(raw)
        except ValueError as exc:
            raise PydanticCustomError("api_key", str(exc)) from None

    @field_validator("api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if url_has_credentials(value):
            # Refused, not stripped: the credential has to leave the configuration it came from (it would be
            # printed and stored with the URL), and a silently different URL would fail in confusing ways.
            raise PydanticCustomError(
                "url_credentials",
                "it contains credentials (user:password@ before the host); remove them: CoinCap takes its key from "
                "COINCAP_API_KEY, and a URL is printed in logs and run records",
            )
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"COINCAP_API_BASE_URL must start with http:// or https:// (got {redact(value)!r})")
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _check_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        register_secret(value.get_secret_value())
        url = value.get_secret_value().strip()
        if not url.startswith(("http://", "https://")):
            # Never echo the value: the URL is the credential.
            raise ValueError("PIPELINE_ALERT_WEBHOOK_URL must start with http:// or https://")
        return SecretStr(url)

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("markets_exchange_ids", "markets_quote_ids", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def lake_dir(self) -> Path:
        """Root folder of the local lake."""
        return self.data_dir.resolve() / "lake"

    @property
    def duckdb_path(self) -> Path:
        """The local warehouse file."""
        return self.data_dir.resolve() / "warehouse.duckdb"

    def bq_dataset(self, layer: str) -> str:
        """BigQuery dataset of a layer (`raw`, `staging`, `marts`, `ops`), e.g. `coincap_marts`."""
        return f"{self.bq_dataset_prefix}{layer}"

    @property
    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None

    @property
    def alert_webhook_url_value(self) -> str | None:
        return self.alert_webhook_url.get_secret_value() if self.alert_webhook_url else None


_current: Settings | None = None


def check_secrets(settings: Settings) -> None:
    """The secret checks of `Settings` again, for settings changed without validation (`model_copy`, as the CLI
    applies its flags): ConfigError for a base URL with credentials or a key with whitespace inside."""
    if url_has_credentials(settings.api_base_url):
        raise ConfigError(
            "COINCAP_API_BASE_URL (or --base-url) contains credentials (user:password@ before the host).",
            "Remove them: CoinCap takes its key from COINCAP_API_KEY, and a URL is printed in logs and run records.",
        )
    key = settings.api_key_value
    if key is not None:
        try:
            clean = clean_api_key(key)
        except ValueError as exc:
            raise ConfigError(f"COINCAP_API_KEY: {exc}.", "") from None
        if clean != key:
            settings.api_key = SecretStr(clean) if clean else None


def use_settings(settings: Settings | None) -> None:
    """Make `settings` what flows and tasks see (the CLI calls this after applying its flags)."""
    global _current
    if settings is not None:
        check_secrets(settings)
        flush_notices()
    _current = settings


def current_settings() -> Settings:
    """The settings in force: those set by `use_settings`, else read from the environment."""
    global _current
    if _current is None:
        _current = Settings()
    return _current
