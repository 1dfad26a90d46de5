output "json" {
  description = "The base job template with the defaults set, as the JSON string prefect_work_pool takes."
  value       = jsonencode(local.rendered)

  precondition {
    condition     = can(local.template.job_configuration) && can(local.template.variables.properties)
    error_message = "The template needs job_configuration and variables.properties, like `prefect work-pool get-default-base-job-template --type cloud-run-v2`."
  }
}

output "defaults" {
  description = "The defaults this module sets, by template variable name."
  value       = local.defaults
}

output "missing_variables" {
  description = "Defaults the template has no variable for (so they are not applied): should be empty."
  value       = sort(setsubtract(keys(local.defaults), keys(local.template.variables.properties)))
}
