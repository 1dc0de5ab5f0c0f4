"""The REST API and the web page: ``emolens serve``, or ``create_app()`` under any ASGI server."""

from emolens.serve.app import create_app

__all__ = ["create_app"]
