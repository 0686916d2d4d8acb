"""The token API's OpenAPI 3.1 description, served at ``/openapi.json``.

Written by hand next to :mod:`reconciler.server.api` (the schemathesis test checks the
server against it): every path, parameter, answer and error body the API has.
"""

from __future__ import annotations

import functools
from typing import Any

from reconciler import __version__

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "stable code, e.g. unauthorized, forbidden"},
        "message": {"type": "string", "description": "what is wrong and what to do, for humans"},
    },
}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry_after:
        answer["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}, "required": True}
        }
    return answer


_AUTH_ERRORS = {
    "400": _error("a query parameter is wrong"),
    "401": _error("no API key, or an unknown, revoked or expired one"),
    "403": _error("the key may not read this link (or there is none), or it is an admin key"),
    "503": _error("the store is unavailable", retry_after=True),
}

_LINK = {
    "type": "object",
    "required": ["name", "provider", "status"],
    "properties": {
        "name": {"type": "string"},
        "provider": {"type": "string"},
        "status": {
            "type": "string",
            "description": "healthy, refreshing, transient_error, needs_authorization, pending_credentials,"
            " configuration_error (or unknown before the first apply of a grant)",
        },
        "source": {"type": ["string", "null"], "description": "file:line the link is declared at"},
        "redirect_url": {"type": ["string", "null"]},
        "grant": {"type": ["string", "null"]},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "access_token_expires_at": {"type": ["string", "null"], "format": "date-time"},
        "last_refresh_at": {"type": ["string", "null"], "format": "date-time"},
        "next_refresh_at": {"type": ["string", "null"], "format": "date-time"},
        "retry_at": {"type": ["string", "null"], "format": "date-time"},
        "last_error": {"type": ["string", "null"]},
    },
}

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "link name",
    "schema": {"type": "string", "minLength": 1},
}


@functools.cache
def schema() -> dict[str, Any]:
    """The OpenAPI document (built once per process)."""
    bearer: list[dict[str, list[str]]] = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "linkctl token API",
            "version": __version__,
            "description": "Access tokens and status of the links an API key's patterns name."
            " Keys come from `linkctl apikey create --links PATTERN`; admin keys (--admin) are for"
            " the pages and are refused here.",
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "an API key"}},
            "schemas": {
                "Error": _ERROR,
                "Link": _LINK,
                "Token": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_at", "scope"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"type": "string"},
                        "expires_at": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "null when the provider gave no expiry",
                        },
                        "scope": {"type": ["string", "null"]},
                    },
                },
            },
        },
        "security": bearer,
        "paths": {
            "/v1/links": {
                "get": {
                    "operationId": "listLinks",
                    "summary": "status of every link the key may read",
                    "responses": {
                        "200": {
                            "description": "the links",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["links"],
                                        "properties": {
                                            "links": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Link"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/links/{name}": {
                "get": {
                    "operationId": "getLink",
                    "summary": "one link's status and spec (secrets shown as sealed)",
                    "parameters": [_NAME],
                    "responses": {
                        "200": {
                            "description": "the link",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Link"}}
                            },
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/links/{name}/token": {
                "get": {
                    "operationId": "getToken",
                    "summary": "an access token valid for at least min_valid seconds",
                    "description": "refreshed first, through the refresh lease, when needed",
                    "parameters": [
                        _NAME,
                        {
                            "name": "min_valid",
                            "in": "query",
                            "required": False,
                            "description": "seconds the token must stay valid (default 60, at most 86400)",
                            "schema": {"type": "number", "minimum": 0, "maximum": 86400},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "the token",
                            "headers": {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}},
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Token"}}
                            },
                        },
                        **_AUTH_ERRORS,
                        "409": _error(
                            "a human must act: authorize the link, add credentials, fix its configuration"
                        ),
                        "422": _error("the provider's tokens live shorter than min_valid"),
                        "503": _error("the provider or the store is unavailable", retry_after=True),
                    },
                }
            },
        },
    }
