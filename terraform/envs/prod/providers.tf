# Credentials come from the environment, never from this configuration:
# - google: Application Default Credentials (`gcloud auth application-default login`, or the CI identity);
# - prefect: PREFECT_API_URL and PREFECT_API_KEY (Prefect Cloud), or PREFECT_API_URL alone for a local server.
provider "google" {
  project = var.project_id
  region  = var.region
}

provider "prefect" {
  account_id   = var.prefect_account_id
  workspace_id = var.prefect_workspace_id
}
