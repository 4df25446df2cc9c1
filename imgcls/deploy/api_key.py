"""The API key of ``imgcls serve``: where it comes from, which keys are usable, and the ASGI middleware that answers
401 to a request that does not carry it.

A request carries the key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Every path needs it but
``OPEN_PATHS``: ``/health``, which load balancers probe without credentials, and ``/``, the page, which is the
same static file in every imgcls install and asks for the key itself (everything it shows comes from routes that
need the key). The 401 is sent before the request's body is read, so an upload without the key costs nothing.
"""

from __future__ import annotations

import hmac
import os

from ..errors import ImgclsError

API_KEY_ENV = "IMGCLS_API_KEY"
MIN_KEY_LENGTH = 16
OPEN_PATHS = frozenset({"/health", "/"})
HOW_TO_SEND = "send the header 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one"


def resolve_api_key(api_key: str | None) -> str | None:
    """The key a server requires: ``api_key`` (``--api-key``) when given, else ``$IMGCLS_API_KEY``, else None (no
    key). An unusable key is one ImgclsError that names where it came from and never shows the key."""
    if api_key is not None:
        return checked_api_key(api_key, "--api-key")
    from_environment = os.environ.get(API_KEY_ENV)
    return None if from_environment is None else checked_api_key(from_environment, API_KEY_ENV)


def checked_api_key(key: str, source: str) -> str:
    """``key`` when it can guard a server: 16 or more printable ASCII characters without spaces (it travels in an
    HTTP header, and a short key can be guessed)."""
    if not key:
        raise ImgclsError(f"{source} is empty: give a key of {MIN_KEY_LENGTH} or more characters ({MAKE_ONE})")
    if not all("!" <= c <= "~" for c in key):
        raise ImgclsError(f"{source}: the key must be printable ASCII without spaces (it travels in an HTTP header)")
    if len(key) < MIN_KEY_LENGTH:
        raise ImgclsError(f"{source} has {len(key)} characters: use {MIN_KEY_LENGTH} or more, a short key can be "
                          f"guessed ({MAKE_ONE})")
    return key


def keys_sent(headers) -> list[bytes]:
    """The keys a request carries, from its raw ASGI headers: a Bearer token and an X-API-Key value."""
    sent = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                sent.append(token.strip())
        elif name == b"x-api-key":
            sent.append(value.strip())
    return sent


def key_matches(sent: list[bytes], key: bytes) -> bool:
    """Whether any key sent is ``key``, each compared in constant time (hmac.compare_digest), so the time an
    answer takes tells nothing about how much of a guess was right."""
    matched = False
    for candidate in sent:
        matched |= hmac.compare_digest(candidate, key)
    return matched


class RequireApiKey:
    """ASGI middleware: 401 with a one-line JSON error for any HTTP request outside ``OPEN_PATHS`` that does not
    carry ``key``."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode("ascii")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        sent = keys_sent(scope.get("headers") or [])
        if key_matches(sent, self.key):
            return await self.app(scope, receive, send)
        from fastapi.responses import JSONResponse

        if sent:
            detail, challenge = f"wrong API key: {HOW_TO_SEND} with this server's key", ', error="invalid_token"'
        else:
            detail, challenge = f"this server needs an API key: {HOW_TO_SEND}", ""
        response = JSONResponse({"detail": detail}, status_code=401,
                                headers={"WWW-Authenticate": f'Bearer realm="imgcls"{challenge}'})
        await response(scope, receive, send)


def declare_api_key(app) -> None:
    """Name the two ways to send the key in the app's OpenAPI schema, so generated clients and Swagger UI's
    Authorize button know them."""
    make_schema = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = make_schema()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
            schema["security"] = [{"bearer": []}, {"apiKeyHeader": []}]
            for path in OPEN_PATHS & schema.get("paths", {}).keys():
                for operation in schema["paths"][path].values():
                    operation["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
