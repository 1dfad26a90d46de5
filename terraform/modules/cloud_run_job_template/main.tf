# Renders the template file (filling its $${...} placeholders), then sets the defaults of the template's
# variables (project, image, region, service account, CPU, memory, timeout, environment, secret references) and
# leaves its job_configuration alone. A deployment can still override any of them in prefect.yaml's job_variables.
locals {
  template = jsondecode(templatefile(var.template_file, var.template_vars))

  defaults = {
    # prefect-gcp's worker creates the jobs in `credentials.project`; left unset, GcpCredentials takes the
    # worker's ADC quota project (a laptop's may be any project), so the project is always explicit here.
    # The worker still authenticates with its own Application Default Credentials (no key in the pool).
    credentials = { project = var.project_id }
    # The flow runs read PREFECT_API_KEY from Secret Manager; without it the worker copies its own key into
    # every job's environment in plain text. null (a server without auth) leaves the worker's behaviour.
    prefect_api_key_secret = var.prefect_api_key_secret == null ? null : { secret = var.prefect_api_key_secret, version = "latest" }
    image                  = var.image
    region                 = var.region
    service_account_name   = var.service_account_email
    cpu                    = var.cpu
    memory                 = var.memory
    timeout                = var.timeout_seconds
    env                    = var.env
    env_from_secrets       = { for name, secret in var.secret_env : name => { secret = secret, version = "latest" } }
  }

  # Only variables the template declares get a default: a template without `cpu` keeps its own job body.
  properties = {
    for name, schema in local.template.variables.properties :
    name => merge(schema, contains(keys(local.defaults), name) ? { default = local.defaults[name] } : {})
  }

  rendered = merge(local.template, {
    variables = merge(local.template.variables, { properties = local.properties })
  })
}
