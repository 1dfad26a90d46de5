locals {
  ms_per_day = 86400000

  # One retention setting (granular_retention_days) for every granular copy of the data: the lake's lifecycle
  # rule deletes snapshot files after it, and here each daily partition of the staging tables (the snapshot
  # datasets' incremental tables, partitioned by snapshot_date) expires after it. Staging's views (price
  # history, stream, intermediate) are not partitioned, so they never expire; dbt replaces them on each build.
  # Marts hold fct_asset_daily, kept forever: the snapshot-grain facts there expire per model, through dbt's
  # partition_expiration_days, which the flows set from the same number (PIPELINE_GRANULAR_RETENTION_DAYS).
  layers = {
    raw = {
      description          = "Hive-partitioned external tables over the lake bucket, one per CoinCap dataset (managed by Terraform)."
      partition_expiration = null
    }
    staging = {
      description          = "dbt staging (incremental tables) and intermediate views: renamed, cast and deduplicated lake rows. Partitions expire after the granular retention."
      partition_expiration = var.granular_retention_days * local.ms_per_day
    }
    marts = {
      description          = "dbt marts: partitioned, clustered facts and dimensions for Looker Studio and analysts."
      partition_expiration = null
    }
    ops = {
      description          = "Pipeline run metrics: one row per dataset per snapshot (rows, credits, durations)."
      partition_expiration = null
    }
  }

  # One external table per committed schema file; the files are generated from the contracts
  # (`python -m flows.contracts.bigquery`), so a new contract gets its table with no Terraform change.
  schema_tables = toset([for f in fileset("${path.module}/schemas", "*.json") : trimsuffix(f, ".json")])
  # Price history is partitioned by interval and asset (`interval=d1/asset=bitcoin/`), not by day.
  history_table   = "asset_history"
  external_tables = setsubtract(local.schema_tables, [local.history_table])
}

resource "google_bigquery_dataset" "this" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption; the data is public market data and a KMS key adds cost and an outage risk without protecting anything secret.
  for_each = local.layers

  project     = var.project_id
  dataset_id  = "${var.dataset_prefix}${each.key}"
  location    = var.location
  description = each.value.description
  # Applies to partitioned tables created after it is set: dbt creates staging's tables on their first build.
  default_partition_expiration_ms = each.value.partition_expiration
  delete_contents_on_destroy      = var.delete_contents_on_destroy
  labels                          = merge(var.labels, { layer = each.key })
}

# External tables: the lake stays the source of truth, a replayed snapshot is one object (never a duplicate
# row), and queries prune by the `dt` partition, which every query must filter on.
resource "google_bigquery_table" "raw" {
  #checkov:skip=CKV_GCP_80:External table: the bytes live in the lake bucket, so a table-level KMS key encrypts nothing.
  #checkov:skip=CKV_GCP_121:External table: dropping it loses no data, and a contract change that retypes a column must be able to replace it.
  for_each = local.external_tables

  project     = var.project_id
  dataset_id  = google_bigquery_dataset.this["raw"].dataset_id
  table_id    = each.key
  description = "CoinCap ${each.key} snapshots in gs://${var.bucket_name}/coincap/${each.key}/dt=YYYY-MM-DD/. Filter on dt."
  labels      = merge(var.labels, { layer = "raw" })

  # See the CKV_GCP_121 note above: the data is in the bucket, protected by versioning.
  deletion_protection = false

  # `dt` is not in the file schema: BigQuery adds it from the path ({dt:DATE} below) and returns it in the
  # table's schema. Without ignore_auto_generated_schema the provider reads that column as one to drop, which
  # forces a replacement of the table on every apply after the first (queries and dbt builds then fail).
  schema                       = file("${path.module}/schemas/${each.key}.json")
  ignore_auto_generated_schema = true

  external_data_configuration {
    autodetect    = false
    source_format = "PARQUET"
    source_uris   = ["gs://${var.bucket_name}/coincap/${each.key}/*"]
    # decimal(38, 18) does not fit NUMERIC (9 decimals); read it as BIGNUMERIC like the schema says.
    decimal_target_types = ["BIGNUMERIC"]

    hive_partitioning_options {
      mode                     = "CUSTOM"
      source_uri_prefix        = "gs://${var.bucket_name}/coincap/${each.key}/{dt:DATE}"
      require_partition_filter = true
    }
  }
}

# Price history from the backfill: coincap/asset_history/interval=<i>/asset=<slug>/<start>_<end>.parquet.
# The hive keys are named apart from the file's own asset_id/history_interval columns (BigQuery forbids a key
# that is also a file column); the staging model filters on `asset`, as the required partition filter wants.
resource "google_bigquery_table" "raw_history" {
  #checkov:skip=CKV_GCP_80:External table: the bytes live in the lake bucket, so a table-level KMS key encrypts nothing.
  #checkov:skip=CKV_GCP_121:External table: dropping it loses no data, and a contract change that retypes a column must be able to replace it.
  project     = var.project_id
  dataset_id  = google_bigquery_dataset.this["raw"].dataset_id
  table_id    = local.history_table
  description = "CoinCap price history in gs://${var.bucket_name}/coincap/asset_history/interval=<i>/asset=<slug>/. Filter on asset or interval."
  labels      = merge(var.labels, { layer = "raw" })

  deletion_protection = false

  # BigQuery adds `interval` and `asset` from the path; see the note on `dt` above.
  schema                       = file("${path.module}/schemas/${local.history_table}.json")
  ignore_auto_generated_schema = true

  external_data_configuration {
    autodetect           = false
    source_format        = "PARQUET"
    source_uris          = ["gs://${var.bucket_name}/coincap/${local.history_table}/*"]
    decimal_target_types = ["BIGNUMERIC"]

    hive_partitioning_options {
      mode                     = "CUSTOM"
      source_uri_prefix        = "gs://${var.bucket_name}/coincap/${local.history_table}/{interval:STRING}/{asset:STRING}"
      require_partition_filter = true
    }
  }
}
