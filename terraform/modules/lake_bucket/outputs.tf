output "name" {
  description = "The bucket name (GCS_BUCKET)."
  value       = google_storage_bucket.lake.name
}

output "url" {
  description = "The bucket URL, gs://<name>."
  value       = google_storage_bucket.lake.url
}

output "results_uri" {
  description = "Where Prefect persists task results, gs://<name>/<results_prefix without the trailing slash>."
  value       = "${google_storage_bucket.lake.url}/${trimsuffix(var.results_prefix, "/")}"
}
