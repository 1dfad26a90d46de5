"""The local dashboard: static HTML pages with inline SVG charts, built from the DuckDB marts, served on 127.0.0.1.

`coincap-pipeline dashboard` builds and serves it; `python -m flows.dashboard screenshots` photographs it.
Modules: `queries` (what is read), `charts` (SVG), `pages` (HTML), `site` (the build), `server`, `browser`
(headless Chromium checks and screenshots), `demo_history` (simulated days of the offline demo).
"""
