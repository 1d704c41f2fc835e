"""Token sign-in for PACS servers behind a token server (``token`` and ``zhivaAuth``)."""

from model_proxy.shared.auth.token_auth import TokenAuth
from model_proxy.shared.auth.token_server import TokenServerClient
from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.auth.tokens import TokenSet

__all__ = ["TokenAuth", "TokenServerClient", "TokenSet", "TokenStore"]
