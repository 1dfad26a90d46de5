# What prefect.yaml, the README and `coincap-pipeline preflight` use. `terraform output -json pipeline_env`
# prints the settings the pipeline reads, ready to export.
output "project_id" {
  description = "The Google Cloud project (GCP_PROJECT_ID)."
  value       = module.project_services.project_id
}

output "region" {
  description = "Region of the Cloud Run jobs and the image repository."
  value       = var.region
}

output "bq_location" {
  description = "BigQuery location of the datasets (BQ_LOCATION)."
  value       = var.bq_location
}

output "bucket_name" {
  description = "The lake bucket (GCS_BUCKET)."
  value       = module.lake_bucket.name
}

output "lake_uri" {
  description = "The lake root, gs://<bucket>."
  value       = module.lake_bucket.url
}

output "prefect_results_uri" {
  description = "Where Prefect persists task results so a retry resumes, gs://<bucket>/prefect-results."
  value       = module.lake_bucket.results_uri
}

output "dataset_prefix" {
  description = "Prefix of the BigQuery datasets (BQ_DATASET_PREFIX)."
  value       = var.dataset_prefix
}

output "datasets" {
  description = "BigQuery dataset ids by layer: raw, staging, marts, ops."
  value       = module.bigquery.datasets
}

output "external_tables" {
  description = "The raw external tables by CoinCap dataset, <project>.<dataset>.<table>."
  value       = module.bigquery.external_tables
}

output "granular_partition_expiration_days" {
  description = "Partition expiration of the granular snapshot facts, in days: granular_retention_days, which the flows pass to dbt (PIPELINE_GRANULAR_RETENTION_DAYS)."
  value       = module.bigquery.granular_partition_expiration_days
}

output "staging_partition_expiration_days" {
  description = "Days after which each daily partition of the staging tables expires: the granular retention."
  value       = module.bigquery.staging_partition_expiration_days
}

output "service_account_email" {
  description = "The runtime service account of the Cloud Run jobs."
  value       = module.iam.service_account_email
}

output "api_key_secret_id" {
  description = "The Secret Manager secret holding the CoinCap API key (COINCAP_API_KEY_SECRET); add its value out of band."
  value       = module.secret.secret_id
}

output "prefect_api_key_secret_id" {
  description = "The Secret Manager secret holding the flow runs' Prefect API key (null if switched off); add its value out of band."
  value       = local.prefect_api_key_secret_id
}

output "artifact_registry_repository_url" {
  description = "Docker prefix for the flow image, <region>-docker.pkg.dev/<project>/<repository>."
  value       = module.artifact_registry.repository_url
}

output "image" {
  description = "The work pool's default image (build and push it before the first run)."
  value       = local.image
}

output "work_pool_name" {
  description = "The Prefect Cloud Run v2 work pool (PIPELINE_WORK_POOL)."
  value       = module.work_pool.name
}

output "pipeline_env" {
  description = "The pipeline's environment variables for the gcp target (no secrets)."
  value       = local.pipeline_env
}
