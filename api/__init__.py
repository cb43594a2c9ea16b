"""HTTP face of the platform: FastAPI routers (thin: parse, authorise, call a service, shape), dashboard pages."""

from api.app import create_app

__all__ = ["create_app"]
