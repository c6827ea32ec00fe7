"""One error shape for every 4xx and 5xx: {"error": {"type", "message", "field"}}.

FastAPI's own validation errors (422 with a list) become a 400 naming the first field at fault; malformed JSON,
unknown routes and methods get the same shape; a user's error from the recommender (`CrossrecError`) is a 400
(404 for an unknown domain); anything else is a 500 whose details go to the log, and the server keeps
serving. `BodyLimit` refuses bodies over the size limit (413) and bodies that are not JSON (415) before any
parsing.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..batched import QueryError
from ..errors import CrossrecError

log = logging.getLogger("crossrec_peft.serve")


class ApiError(Exception):
    def __init__(self, status: int, type: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.field = status, type, message, field


def error_response(status: int, type: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type, "message": message, "field": field}}, status_code=status)


def field_path(loc: tuple | list) -> str | None:
    """("body", "history", 0) -> "history[0]"."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not isinstance(p, str) or p.startswith(("function-", "union[", "list[", "dict[", "str", "int")):
            continue  # pydantic names union branches in the location: not a field of the request
        else:
            out += f".{p}" if out else p
    return out or None


def from_validation(errors: list[dict[str, Any]]) -> tuple[str, str, str | None]:
    first = errors[0]
    kind = first.get("type", "")
    if kind == "json_invalid":
        context = (first.get("ctx") or {}).get("error", "")
        return "malformed_json", f"The body is not valid JSON: {context}.".replace(": .", "."), None
    field = field_path(first.get("loc", ()))
    if kind == "missing" and field is None:  # FastAPI reads an empty body as a missing one, with no field to name
        return "invalid_value", "The body is empty: it must be a JSON object of the request's fields.", None
    if kind == "missing":
        return "missing_field", f"'{field}' is required.", field
    if kind == "extra_forbidden":
        return "unknown_field", f"'{field}' is not a field of this request.", field
    # A union (an item is an id or an object) reports one error per branch at the same place: say them together.
    same = [e for e in errors if field_path(e.get("loc", ())) == field]
    message = "; or ".join(dict.fromkeys(e.get("msg", "invalid value") for e in same))
    if kind in ("model_attributes_type", "dict_type") and field is None:
        message = "The body must be a JSON object"
    rest = len({field_path(e.get("loc", ())) for e in errors} - {field})
    more = f" ({rest} more field{'s' if rest > 1 else ''} at fault)" if rest else ""
    return "invalid_value", f"{field or 'body'}: {message.rstrip('.')}{more}.", field


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return error_response(exc.status, exc.type, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(400, *from_validation(list(exc.errors())))

    @app.exception_handler(QueryError)
    async def _query(request: Request, exc: QueryError):
        return error_response(404 if exc.kind == "unknown_domain" else 400, exc.kind, str(exc), exc.field)

    @app.exception_handler(CrossrecError)
    async def _user(request: Request, exc: CrossrecError):
        return error_response(400, "bad_request", str(exc), None)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail), None)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", f"Internal error ({type(exc).__name__}); the server log has the details.", None)


class BodyLimit:
    """ASGI middleware: a request body must be JSON (Content-Type application/json) and at most `limit` bytes.
    The body is read (up to limit + 1 bytes) before the application sees it, so a chunked upload without a
    Content-Length is bounded too."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            shown = media.decode("latin-1") or "none"
            return await error_response(415, "unsupported_media_type", f"Send JSON (Content-Type: application/json), not {shown}.")(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        response = error_response(413, "body_too_large", f"The body is over the limit of {self.limit} bytes.")
        await response(scope, receive, send)
