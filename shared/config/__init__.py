"""servers.json and models.json: their schemas and the catalog loaded from them."""

from model_proxy.shared.config.catalog import Catalog, catalog_from_settings, load_catalog
from model_proxy.shared.config.limits import SizeLimits
from model_proxy.shared.config.schema import (
    AuthType,
    DataFilterSpec,
    Level,
    ModelConfig,
    ResultObject,
    ServerConfig,
    StoreConfig,
    Task,
    Transport,
)

__all__ = [
    "AuthType",
    "Catalog",
    "DataFilterSpec",
    "Level",
    "ModelConfig",
    "ResultObject",
    "ServerConfig",
    "SizeLimits",
    "StoreConfig",
    "Task",
    "Transport",
    "catalog_from_settings",
    "load_catalog",
]
