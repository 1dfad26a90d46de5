"""`python -m flows.quality`: the lake's freshness thresholds for the configured target, as the vars of a
`dbt source freshness` by hand: dbt source freshness --vars "$(python -m flows.quality)"."""

import json

from flows.quality.freshness import dbt_freshness_vars, freshness_thresholds
from flows.settings import current_settings

print(json.dumps(dbt_freshness_vars(freshness_thresholds(current_settings()))))
