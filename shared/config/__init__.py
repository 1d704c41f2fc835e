"""servers.json and models.json: their schemas and the catalog loaded from them."""

from shared.config.catalog import Catalog, load_catalog
from shared.config.schema import AuthType, DataFilterSpec, Level, ModelConfig, ServerConfig, Task

__all__ = [
    "AuthType",
    "Catalog",
    "DataFilterSpec",
    "Level",
    "ModelConfig",
    "ServerConfig",
    "Task",
    "load_catalog",
]
