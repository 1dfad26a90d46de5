# The APIs every other module needs. Other modules take `project_id` from this module's output, so nothing is
# created before its API is on.
resource "google_project_service" "this" {
  for_each = var.services

  project = var.project_id
  service = each.value

  # Turning an API off on destroy would break anything else in the project that uses it.
  disable_on_destroy         = false
  disable_dependent_services = false
}
