output "name" {
  description = "The work pool name."
  value       = prefect_work_pool.cloud_run.name
}

output "id" {
  description = "The work pool id (UUID)."
  value       = prefect_work_pool.cloud_run.id
}
