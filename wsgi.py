"""WSGI entry point: `flask --app wsgi …` and `gunicorn wsgi:app`."""

from backoffice import create_app

app = create_app()
