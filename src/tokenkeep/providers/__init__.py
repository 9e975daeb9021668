"""Provider catalog (data, ``providers.yaml``) and the few provider-specific behaviours."""

from tokenkeep.providers.catalog import Provider, get_provider, load_catalog

__all__ = ["Provider", "get_provider", "load_catalog"]
