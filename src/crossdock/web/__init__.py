"""The web layer: REST API, webhooks, Prometheus metrics and the operator dashboard.

Import from the submodules (``crossdock.web.app``, ``crossdock.web.server``): this package stays empty so the CLI's
token commands load without FastAPI.
"""
