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
  description = "Partition expiration for the granular snapshot facts in marts, in days (for dbt's partition_expiration_days)."
  value       = var.granular_partition_expiration_days
}
