# The gcp target of the CoinCap pipeline: APIs, lake bucket, BigQuery datasets and external tables, runtime
# service account, API-key secret, image repository, and the Prefect Cloud Run work pool.
locals {
  bucket_name = coalesce(var.bucket_name, "${var.project_id}-coincap-lake")
  labels      = merge({ app = "coincap-pipeline", env = "prod", managed-by = "terraform" }, var.labels)

  base_job_template_file = coalesce(var.base_job_template_file, "${path.root}/../../../deployments/cloud-run-v2-job-template.json")
  image                  = coalesce(var.image, "${module.artifact_registry.repository_url}/coincap-pipeline:latest")

  # The pipeline's settings (flows/settings.py) as environment variables: every flow run gets them, and
  # `terraform output -json pipeline_env` gives them to a laptop.
  pipeline_env = {
    PIPELINE_TARGET        = "gcp"
    GCP_PROJECT_ID         = var.project_id
    GCS_BUCKET             = module.lake_bucket.name
    BQ_LOCATION            = var.bq_location
    BQ_DATASET_PREFIX      = var.dataset_prefix
    COINCAP_API_KEY_SECRET = module.secret.secret_id
    PIPELINE_WORK_POOL     = var.work_pool_name
  }
}

module "project_services" {
  source = "../../modules/project_services"

  project_id = var.project_id
}

module "lake_bucket" {
  source = "../../modules/lake_bucket"

  project_id                        = module.project_services.project_id
  name                              = local.bucket_name
  location                          = coalesce(var.bucket_location, var.region)
  labels                            = local.labels
  granular_retention_days           = var.granular_retention_days
  results_retention_days            = var.results_retention_days
  noncurrent_version_retention_days = var.noncurrent_version_retention_days
  soft_delete_retention_days        = var.soft_delete_retention_days
}

module "bigquery" {
  source = "../../modules/bigquery"

  project_id                         = module.project_services.project_id
  location                           = var.bq_location
  dataset_prefix                     = var.dataset_prefix
  bucket_name                        = module.lake_bucket.name
  labels                             = local.labels
  staging_table_expiration_days      = var.staging_table_expiration_days
  granular_partition_expiration_days = var.granular_partition_expiration_days
}

module "secret" {
  source = "../../modules/secret"

  project_id = module.project_services.project_id
  secret_id  = var.api_key_secret_id
  labels     = local.labels
}

module "artifact_registry" {
  source = "../../modules/artifact_registry"

  project_id    = module.project_services.project_id
  location      = var.region
  repository_id = var.artifact_repository_id
  labels        = local.labels
}

module "iam" {
  source = "../../modules/iam"

  project_id          = module.project_services.project_id
  account_id          = var.service_account_id
  bucket_name         = module.lake_bucket.name
  read_datasets       = { raw = module.bigquery.datasets["raw"] }
  write_datasets      = { for layer in ["staging", "marts", "ops"] : layer => module.bigquery.datasets[layer] }
  secret_id           = module.secret.secret_id
  repository_location = module.artifact_registry.location
  repository_id       = module.artifact_registry.repository_id
  worker_members      = var.worker_members
}

module "job_template" {
  source = "../../modules/cloud_run_job_template"

  template_file = local.base_job_template_file
  # The placeholders deployments/cloud-run-v2-job-template.json uses; the defaults below win either way.
  template_vars = {
    image                  = local.image
    region                 = var.region
    service_account_email  = module.iam.service_account_email
    coincap_api_key_secret = module.secret.secret_id
  }
  image                 = local.image
  region                = var.region
  service_account_email = module.iam.service_account_email
  cpu                   = var.job_cpu
  memory                = var.job_memory
  timeout_seconds       = var.job_timeout_seconds
  env                   = local.pipeline_env
  secret_env            = { COINCAP_API_KEY = module.secret.secret_id }
}

module "work_pool" {
  source = "../../modules/prefect_work_pool"

  name              = var.work_pool_name
  base_job_template = module.job_template.json
}
