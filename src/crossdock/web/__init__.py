"""The web layer: REST API, webhooks, Prometheus metrics and the operator dashboard."""

from crossdock.web.app import create_app
from crossdock.web.server import build_server, first_start_token, serve_web
from crossdock.web.settings import WebSettings

__all__ = ["WebSettings", "build_server", "create_app", "first_start_token", "serve_web"]
