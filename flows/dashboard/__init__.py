"""The local dashboard: static HTML pages with inline SVG charts, built from the DuckDB marts, served on 127.0.0.1.

`coincap-pipeline dashboard` builds and serves it; `python -m flows.dashboard screenshots` photographs it.
Modules: `reader` (the warehouse, read-only), `queries` and `health_queries` (what is read), `charts` (SVG),
`formatting`, `pages` (HTML, a module per page), `site` (the build), `server`, `browser` (headless Chromium checks
and screenshots); the offline demo's simulated days come from the lab (`flows/lab/demo_history.py`).
"""
