"""The control plane: a FastAPI app over a :class:`~tokenkeep.runtime.Gateway`."""

from tokenkeep.api.app import create_app

__all__ = ["create_app"]
