output "secret_id" {
  description = "The secret id, as Cloud Run's secret references take it."
  value       = google_secret_manager_secret.api_key.secret_id
}

output "name" {
  description = "The secret's full resource name, projects/<number>/secrets/<id>."
  value       = google_secret_manager_secret.api_key.name
}
