output "repository_id" {
  description = "The repository id."
  value       = google_artifact_registry_repository.images.repository_id
}

output "location" {
  description = "The repository location."
  value       = google_artifact_registry_repository.images.location
}

output "repository_url" {
  description = "Docker push/pull prefix, <location>-docker.pkg.dev/<project>/<repository>."
  value       = google_artifact_registry_repository.images.registry_uri
}
