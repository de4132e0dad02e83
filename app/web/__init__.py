"""The dashboard: HTML pages and ES modules served by the API's own app (no build step).

Pages live in ``app/web/pages/`` (one HTML file each), their scripts in ``app/web/static/js/``
and talk to the public ``/v1`` API only, through ``static/js/api.js``. ``routes.py`` serves
them; ``app.main.create_app`` mounts ``router``.
"""

from app.web.routes import router

__all__ = ["router"]
