"""Where the repository's non-Python parts live (dbt/, looker/, deployments/, terraform/), found once.

The package is installed from the repository (editable, or copied whole into the image), so the project root is
the folder above `flows/`. Every module that reads one of those folders takes the root from here, so moving a module
never changes what it finds.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
