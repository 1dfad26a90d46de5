variable "project_id" {
  type        = string
  description = "The Google Cloud project of the service account and every resource it is granted on."
}

variable "account_id" {
  type        = string
  description = "Id of the runtime service account (the part before @), used by the Cloud Run jobs."
  default     = "coincap-pipeline"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{4,28}[a-z0-9])$", var.account_id))
    error_message = "A service account id is 6-30 lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "bucket_name" {
  type        = string
  description = "The lake bucket the pipeline reads and writes."
}

variable "read_datasets" {
  type        = map(string)
  description = "Datasets the pipeline only reads (BigQuery Data Viewer), keyed by layer, e.g. { raw = \"coincap_raw\" }."
  default     = {}
}

variable "write_datasets" {
  type        = map(string)
  description = "Datasets the pipeline writes (BigQuery Data Editor), keyed by layer, e.g. { marts = \"coincap_marts\" }."
  default     = {}
}

variable "secret_ids" {
  type        = map(string)
  description = "Secret Manager secret ids whose values the jobs read, by a fixed key, e.g. { coincap_api_key = \"coincap-api-key\", prefect_api_key = \"prefect-api-key\" }."
}

variable "repository_location" {
  type        = string
  description = "Location of the Artifact Registry repository holding the flow image."
}

variable "repository_id" {
  type        = string
  description = "Id of the Artifact Registry repository holding the flow image."
}

variable "worker_members" {
  type        = list(string)
  description = "Principals that run the Prefect Cloud Run worker (e.g. serviceAccount:prefect-worker@example-project.iam.gserviceaccount.com): they may start Cloud Run jobs and run them as the runtime account."
  default     = []

  validation {
    condition     = alltrue([for m in var.worker_members : can(regex("^(serviceAccount|user|group|principal|principalSet):", m))]) && !contains(var.worker_members, "allUsers") && !contains(var.worker_members, "allAuthenticatedUsers")
    error_message = "worker_members are IAM principals such as serviceAccount:NAME@PROJECT.iam.gserviceaccount.com; public members are not allowed."
  }
}
