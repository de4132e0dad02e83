"""The HTTP service: FastAPI routes, schemas, DB tables and settings."""
