output "datasets" {
  description = "Dataset ids by layer: raw, staging, marts, ops."
  value       = { for layer, ds in google_bigquery_dataset.this : layer => ds.dataset_id }
}

output "external_tables" {
  description = "Fully qualified raw external tables by CoinCap dataset, <project>.<dataset>.<table>."
  value = merge(
    { for name, t in google_bigquery_table.raw : name => "${t.project}.${t.dataset_id}.${t.table_id}" },
    { (local.history_table) = "${google_bigquery_table.raw_history.project}.${google_bigquery_table.raw_history.dataset_id}.${google_bigquery_table.raw_history.table_id}" },
  )
}

output "granular_partition_expiration_days" {
  description = "Partition expiration of the granular snapshot facts in marts, in days: the granular retention, which the flows pass to dbt."
  value       = var.granular_retention_days
}

output "staging_partition_expiration_days" {
  description = "Days after which each daily partition of the staging tables expires: the granular retention."
  value       = var.granular_retention_days
}
