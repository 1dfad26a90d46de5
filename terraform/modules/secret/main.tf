# A secret without its value: the value is added out of band, e.g. for the CoinCap API key
#   printf %s "$COINCAP_API_KEY" | gcloud secrets versions add coincap-api-key --data-file=-
# and for the Prefect API key the flow runs use
#   printf %s "$PREFECT_API_KEY" | gcloud secrets versions add prefect-api-key --data-file=-
# so it never reaches Terraform state or the repository.
resource "google_secret_manager_secret" "api_key" {
  project   = var.project_id
  secret_id = var.secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}
