variable "project_id" {
  type        = string
  description = "The Google Cloud project that owns the secret."
}

variable "secret_id" {
  type        = string
  description = "Id of the secret, e.g. coincap-api-key (COINCAP_API_KEY_SECRET, the default) or prefect-api-key."
  default     = "coincap-api-key"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.secret_id))
    error_message = "Secret ids use letters, digits, dashes and underscores (at most 255)."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels on the secret."
  default     = {}
}
