"""An MCP server behind Portcullis for test_14_mcp: the official Python SDK's
FastMCP over the streamable HTTP transport, answering in JSON
(`json_response=True`) or in SSE, with sessions (stateful).

It records every tool execution and the headers of every HTTP request it
receives, and serves them at GET /__seen, so the test can prove that a denied
call never executed and that the caller's token never arrived.

usage: mcp_server.py PORT MODE PATH    (MODE: json | sse; PATH: e.g. /json/mcp)
"""

from __future__ import annotations

import sys

import uvicorn
from mcp.server.fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse

PORT, MODE, PATH = int(sys.argv[1]), sys.argv[2], sys.argv[3]

EXECUTED: list[str] = []
HEADERS: list[dict[str, str]] = []

mcp = FastMCP("portcullis-e2e", host="127.0.0.1", port=PORT, streamable_http_path=PATH,
              json_response=(MODE == "json"), stateless_http=False)


@mcp.tool()
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    EXECUTED.append("get_weather")
    return f"sunny in {city}"


@mcp.tool()
def search(query: str) -> str:
    """Search the catalogue."""
    EXECUTED.append("search")
    return f"results for {query}"


@mcp.tool()
def delete_records(table: str) -> str:
    """Delete every record of a table."""
    EXECUTED.append("delete_records")
    return f"deleted {table}"


@mcp.tool()
def admin_reset() -> str:
    """Reset the system."""
    EXECUTED.append("admin_reset")
    return "reset"


@mcp.custom_route("/__seen", methods=["GET"])
async def seen(_: Request) -> JSONResponse:
    return JSONResponse({"executed": EXECUTED, "headers": HEADERS})


def recording(app):
    """ASGI middleware: the headers of every HTTP request, as received."""
    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/__seen":
            HEADERS.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        await app(scope, receive, send)
    return wrapped


if __name__ == "__main__":
    uvicorn.run(recording(mcp.streamable_http_app()), host="127.0.0.1", port=PORT,
                log_level="warning")
