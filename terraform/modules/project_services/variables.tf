variable "project_id" {
  type        = string
  description = "The Google Cloud project to enable the APIs in."
}

variable "services" {
  type        = set(string)
  description = "The APIs the pipeline uses, e.g. storage.googleapis.com."
  default = [
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]

  validation {
    condition     = alltrue([for s in var.services : endswith(s, ".googleapis.com")])
    error_message = "Each service is an API name ending in .googleapis.com."
  }
}
