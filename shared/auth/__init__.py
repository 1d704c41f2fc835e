"""Token sign-in for PACS servers behind a token server (``token`` and ``zhivaAuth``)."""

from shared.auth.token_auth import TokenAuth
from shared.auth.token_server import TokenServerClient
from shared.auth.token_store import TokenStore
from shared.auth.tokens import TokenSet

__all__ = ["TokenAuth", "TokenServerClient", "TokenSet", "TokenStore"]
