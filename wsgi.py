"""WSGI entry point: `flask --app wsgi …` and `gunicorn wsgi:app`."""

import sys

from backoffice import create_app
from backoffice.config import ConfigError

try:
    app = create_app()
except ConfigError as error:  # a setting named with what it should be, not a traceback
    print(f"配置有误：{error}", file=sys.stderr)
    sys.exit(4)  # gunicorn's "the application failed to load": it stops instead of booting workers for ever
