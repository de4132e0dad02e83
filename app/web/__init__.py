"""The dashboard: HTML pages and ES modules served by the API's own app (no build step).

Where each part lives:

- ``/`` (jobs list, new-job form): ``pages/jobs.html`` + ``static/js/jobs.js``
- ``/jobs/{id}`` (one job): ``pages/job.html`` + ``static/js/job.js``, which uses
  ``charts.js`` (curves), ``timeline.js`` (training grids, real images) and ``generate.js``
- ``/compare``: ``pages/compare.html`` + ``static/js/compare.js``
- ``static/js/api.js``: the only way a page reaches the service (the public ``/v1`` API, the
  key, the event stream, errors beside their fields); ``static/js/ui.js``: shared pieces;
  ``static/js/format.js``: text helpers; ``static/css/app.css``: the one stylesheet
- ``routes.py``: serves the pages and static files, and plotly.js (its basic build from
  npm, installed by ``scripts/setup`` from ``package-lock.json``, else the ``plotly``
  wheel's); ``docs.py``: ``/docs`` and ``/redoc`` without a CDN

``app.main.create_app`` mounts both routers.
"""

from app.web.routes import router

__all__ = ["router"]
