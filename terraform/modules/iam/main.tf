# The runtime identity of the Cloud Run jobs, granted only what the pipeline does: read and write objects in
# one bucket, read raw and write the dbt and ops datasets, run query jobs, read its secrets, pull one image,
# write logs. Every grant except the two that only exist at project level sits on the resource itself.
resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = var.account_id
  display_name = "CoinCap pipeline runtime"
  description  = "Runs the Prefect flows on Cloud Run: extract to the lake, dbt build in BigQuery."
}

locals {
  member = "serviceAccount:${google_service_account.runtime.email}"

  bucket_roles = toset([
    "roles/storage.objectAdmin",        # write snapshot objects (with generation preconditions), list, read
    "roles/storage.legacyBucketReader", # storage.buckets.get: external-table queries and clients need it
  ])

  # Query jobs are billed to and created in the project; there is no narrower place to grant these.
  project_roles = toset([
    "roles/bigquery.jobUser",
    "roles/logging.logWriter",
  ])

  dataset_roles = merge(
    { for layer, id in var.read_datasets : layer => { dataset_id = id, role = "roles/bigquery.dataViewer" } },
    { for layer, id in var.write_datasets : layer => { dataset_id = id, role = "roles/bigquery.dataEditor" } },
  )
}

resource "google_storage_bucket_iam_member" "runtime" {
  for_each = local.bucket_roles

  bucket = var.bucket_name
  role   = each.value
  member = local.member
}

resource "google_bigquery_dataset_iam_member" "runtime" {
  for_each = local.dataset_roles

  project    = var.project_id
  dataset_id = each.value.dataset_id
  role       = each.value.role
  member     = local.member
}

resource "google_project_iam_member" "runtime" {
  for_each = local.project_roles

  project = var.project_id
  role    = each.value
  member  = local.member
}

# Cloud Run resolves a job's secret references (COINCAP_API_KEY, PREFECT_API_KEY) as the job's own identity.
resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each = var.secret_ids

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = local.member
}

resource "google_artifact_registry_repository_iam_member" "runtime" {
  project    = var.project_id
  location   = var.repository_location
  repository = var.repository_id
  role       = "roles/artifactregistry.reader"
  member     = local.member
}

# The principals that run `prefect worker start --pool <pool>`: they create and start Cloud Run jobs that run
# as the runtime account. Empty when nobody runs a worker yet.
resource "google_project_iam_member" "worker_run_developer" {
  for_each = toset(var.worker_members)

  project = var.project_id
  role    = "roles/run.developer"
  member  = each.value
}

resource "google_service_account_iam_member" "worker_act_as" {
  for_each = toset(var.worker_members)

  service_account_id = google_service_account.runtime.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}
