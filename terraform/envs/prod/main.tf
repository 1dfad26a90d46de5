# The gcp target of the CoinCap pipeline: APIs, lake bucket, BigQuery datasets and external tables, runtime
# service account, the API-key secrets (CoinCap, Prefect), image repository, and the Prefect Cloud Run work pool.
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
    # One retention for the lake's lifecycle rule, staging's partitions and the maintenance flow.
    PIPELINE_GRANULAR_RETENTION_DAYS = tostring(var.granular_retention_days)
  }

  # The secrets the runtime account reads: the CoinCap key, and the Prefect key unless it is switched off
  # (the map's keys depend on the variable only, so for_each knows them at plan time).
  prefect_api_key_secret_id = one(module.prefect_api_key_secret[*].secret_id)
  runtime_secret_ids = merge(
    { coincap_api_key = module.secret.secret_id },
    var.prefect_api_key_secret_id == null ? {} : { prefect_api_key = local.prefect_api_key_secret_id },
  )
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

  project_id              = module.project_services.project_id
  location                = var.bq_location
  dataset_prefix          = var.dataset_prefix
  bucket_name             = module.lake_bucket.name
  labels                  = local.labels
  granular_retention_days = var.granular_retention_days
}

module "secret" {
  source = "../../modules/secret"

  project_id = module.project_services.project_id
  secret_id  = var.api_key_secret_id
  labels     = local.labels
}

# The Prefect API key of the flow runs: Cloud Run injects it from here, so it is not in plain text in every
# job's environment. Its value is added out of band, like the CoinCap key's.
module "prefect_api_key_secret" {
  source = "../../modules/secret"
  count  = var.prefect_api_key_secret_id == null ? 0 : 1

  project_id = module.project_services.project_id
  secret_id  = var.prefect_api_key_secret_id
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
  secret_ids          = local.runtime_secret_ids
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
  project_id             = module.project_services.project_id
  prefect_api_key_secret = local.prefect_api_key_secret_id
  image                  = local.image
  region                 = var.region
  service_account_email  = module.iam.service_account_email
  cpu                    = var.job_cpu
  memory                 = var.job_memory
  timeout_seconds        = var.job_timeout_seconds
  env                    = local.pipeline_env
  secret_env             = { COINCAP_API_KEY = module.secret.secret_id }
}

module "work_pool" {
  source = "../../modules/prefect_work_pool"

  name              = var.work_pool_name
  base_job_template = module.job_template.json
}
