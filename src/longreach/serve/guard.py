"""ASGI middleware in front of every route: API key check and request body size caps."""

from __future__ import annotations

import hmac

from .errors import APIError


class BodyTooLarge(Exception):
    """Raised from `receive` when a body streams past its cap (answered with 413)."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self.limit = limit

    def error(self) -> APIError:
        return APIError(413, f"the request body exceeds {self.limit} bytes", "body_too_large")


class Guard:
    """Refuse /v1 requests without the API key (401) and bodies over their cap (413).

    Args:
        app: the wrapped ASGI app.
        api_key: the expected bearer token; None disables the check.
        max_body_bytes: cap on request bodies.
        max_upload_bytes: cap on the body of POST /v1/contexts (documents are larger).
    """

    def __init__(self, app, api_key: str | None, max_body_bytes: int, max_upload_bytes: int):
        self.app, self.api_key = app, api_key
        self.max_body_bytes, self.max_upload_bytes = max_body_bytes, max_upload_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and scope["path"].startswith("/v1/") and not self._authorised(headers):
            error = APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                             "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            return await error.response()(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/contexts"
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await BodyTooLarge(limit).error().response()(scope, receive, send)
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return await self.app(scope, capped_receive, send)

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = headers.get("x-api-key", "")
        return hmac.compare_digest(token.strip().encode(), self.api_key.encode())
