variable "project_id" {
  type        = string
  description = "The Google Cloud project that owns the repository."
}

variable "location" {
  type        = string
  description = "Repository region; use the Cloud Run region so image pulls stay in-region."
}

variable "repository_id" {
  type        = string
  description = "Id of the Docker repository holding the flow image."
  default     = "coincap-pipeline"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.repository_id))
    error_message = "Repository ids are lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels on the repository."
  default     = {}
}

variable "keep_recent_versions" {
  type        = number
  description = "How many of the most recent image versions the cleanup policy always keeps."
  default     = 10

  validation {
    condition     = var.keep_recent_versions >= 1
    error_message = "Keep at least one image version."
  }
}

variable "untagged_retention_days" {
  type        = number
  description = "Days after which untagged images (older than the kept recent versions) are deleted."
  default     = 14

  validation {
    condition     = var.untagged_retention_days >= 1
    error_message = "untagged_retention_days is at least 1."
  }
}
