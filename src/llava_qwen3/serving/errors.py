"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for every failure the server answers.

Bad input raises `ApiError` with a 4xx status where it enters; FastAPI's validation errors, unknown routes and wrong
methods are turned into the same shape by the handlers `install_error_handlers` registers. Only a fault of the server
itself (the engine failing) answers 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger(__name__)

# The `type` of an error by its HTTP status, as OpenAI names them.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """A request the server refuses: its HTTP status, a message saying what was wrong and what is expected, the
    parameter at fault and a short machine-readable code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON body: OpenAI's error object."""
        error_type = ERROR_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": error_type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    def sse(self) -> str:
        """The error as a server-sent event, for a stream that has already begun."""
        return f"data: {json.dumps(self.body())}\n\n"


def validation_error(error: RequestValidationError) -> ApiError:
    """The first of FastAPI's validation errors as a 400 naming the parameter (malformed JSON included)."""
    first = error.errors()[0] if error.errors() else {"msg": "invalid request", "loc": ()}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "form", "header")]
    param = ".".join(location) or None
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", first.get("msg"))
        return ApiError(400, f"the request body is not valid JSON: {detail}.", code="invalid_json")
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "missing":
        return ApiError(400, f"{param or 'a field'} is required.", param=param, code="missing_field")
    if first.get("type") == "extra_forbidden":
        return ApiError(400, f"{param} is not a parameter this endpoint takes.", param=param, code="unknown_parameter")
    return ApiError(400, f"{param or 'the request'}: {message}.", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers that answer every error in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return validation_error(error).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        message = {
            404: f"there is no endpoint {request.url.path}; see /docs for the API.",
            405: f"{request.method} is not allowed on {request.url.path}.",
        }.get(error.status_code, str(error.detail))
        return ApiError(error.status_code, message, code=code).response()

    @app.exception_handler(Exception)
    async def _fault(request: Request, error: Exception) -> JSONResponse:
        logger.exception("internal error answering %s %s", request.method, request.url.path)
        return ApiError(500, "the server failed to answer this request; see its log.", code="internal_error").response()
