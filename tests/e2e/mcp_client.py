"""An AI agent's side of repobox's MCP server, with the official Python SDK (`mcp`).

Run by tests/e2e/mcp.rs:

    python mcp_client.py stdio BINARY SERVER_URL REPO_URL BRANCH HEAD [API_KEY]
    python mcp_client.py http  MCP_URL            REPO_URL BRANCH HEAD [API_KEY]
    python mcp_client.py refused MCP_URL BINARY SERVER_URL

The first two connect (stdio: spawn `BINARY mcp` with REPOBOX_URL, and REPOBOX_API_KEY
when given; http: streamable HTTP with `Authorization: Bearer API_KEY` when given), list
the tools and call every one of them on a sandbox of REPO_URL, checking each answer,
first on the current protocol revision (2026-07-28, no handshake), then again briefly
with the initialize handshake of the earlier revisions. The sandbox is destroyed
whatever happens. `refused` goes without a key: the HTTP connection must fail, and over
stdio a tool must answer the server's 401 as isError.

Prints one JSON line on success; exits 1 with the transcript on a failed check. With MCP_TRANSCRIPT=FILE, the transcript (each call and
its answer) is also written there.
"""

import json
import os
import re
import sys
import tempfile

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

TOOLS = {
    "create_sandbox",
    "list_sandboxes",
    "run_command",
    "read_file",
    "write_file",
    "list_directory",
    "search_files",
    "destroy_sandbox",
}
UNKNOWN = "repo-container-0-0"
transcript = []


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


async def call(client, name, arguments, *, error=False):
    result = await client.call_tool(name, arguments)
    text = "\n".join(block.text for block in result.content if block.type == "text")
    transcript.append({"tool": name, "arguments": arguments, "isError": result.is_error, "text": text})
    check(bool(result.is_error) == error, f"{name}: isError {result.is_error}, expected {error}: {text}")
    return text


async def scenario(client, repo_url, branch, head):
    check(client.protocol_version == "2026-07-28", f"negotiated {client.protocol_version}")
    listed = await client.list_tools()
    names = {tool.name for tool in listed.tools}
    check(names == TOOLS, f"tools: {sorted(names)}")
    for tool in listed.tools:
        check(tool.description and len(tool.description) > 30, f"{tool.name} has no description")
    schema = next(tool for tool in listed.tools if tool.name == "run_command").input_schema
    check(set(schema["required"]) == {"container_id", "command"}, f"run_command schema: {schema}")

    text = await call(client, "create_sandbox", {"repo_url": repo_url, "branch": branch, "max_runtime_secs": 900})
    found = re.search(r"^container_id: (\S+)$", text, re.M)
    check(found, f"no container_id in: {text}")
    container_id = found.group(1)
    print(json.dumps({"created": container_id}), file=sys.stderr, flush=True)
    try:
        check(f"commit: {head}" in text and f"branch: {branch}" in text, text)
        await with_sandbox(client, container_id, head)
    finally:
        text = await call(client, "destroy_sandbox", {"container_id": container_id})
        check(text == f"Destroyed sandbox {container_id}.", text)

    text = await call(client, "list_sandboxes", {})
    check(container_id not in text, f"still listed: {text}")
    text = await call(client, "destroy_sandbox", {"container_id": container_id}, error=True)
    check(f"no container with id {container_id}" in text, text)
    return container_id


async def with_sandbox(client, cid, head):
    text = await call(client, "list_sandboxes", {})
    line = next((line for line in text.splitlines() if cid in line), None)
    check(line is not None and "running" in line, f"not listed as running: {text}")

    # A command: exit code, stdout and stderr apart, the checkout at /workspace.
    text = await call(
        client, "run_command", {"container_id": cid, "command": "echo out; echo err >&2; git rev-parse HEAD; pwd; exit 3"}
    )
    check(text.startswith("exit code: 3 "), text)
    check(f"stdout:\nout\n{head}\n/workspace\n" in text, text)
    check(text.endswith("stderr:\nerr"), text)
    text = await call(
        client,
        "run_command",
        {"container_id": cid, "command": "pwd && sleep 5", "working_directory": "/tmp", "timeout_secs": 1},
    )
    check(text.startswith("Timed out after") and "exit code 124" in text and "/tmp" in text, text)

    # Write, then read back; relative paths are under /workspace.
    content = "first line\nneedle in a haystack\nthird line\n"
    text = await call(client, "write_file", {"container_id": cid, "path": "notes/mcp.txt", "content": content})
    check(text == f"Wrote {len(content.encode())} bytes to /workspace/notes/mcp.txt.", text)
    text = await call(client, "read_file", {"container_id": cid, "path": "/workspace/notes/mcp.txt"})
    check(
        text == "/workspace/notes/mcp.txt: lines 1-3 of 3\n     1\tfirst line\n     2\tneedle in a haystack\n     3\tthird line",
        text,
    )
    text = await call(client, "read_file", {"container_id": cid, "path": "notes/mcp.txt", "offset_line": 2, "limit_lines": 1})
    check(text.startswith("/workspace/notes/mcp.txt: lines 2-2 of 3\n     2\tneedle in a haystack\n"), text)
    check("read on with offset_line=3" in text, text)
    text = await call(client, "read_file", {"container_id": cid, "path": "README.md"})
    check("     1\t# simple" in text, text)
    text = await call(client, "run_command", {"container_id": cid, "command": "cat notes/mcp.txt"})
    check(f"stdout:\n{content}" in text, text)

    # Directories, bounded.
    text = await call(client, "list_directory", {"container_id": cid, "path": "."})
    check(text.startswith("/workspace: ") and "dir  .git/" in text and "dir  notes/" in text, text)
    check("file README.md (" in text and "truncated" not in text, text)
    text = await call(client, "list_directory", {"container_id": cid, "path": "/workspace", "max_entries": 1})
    check("[truncated: " in text and len(text.splitlines()) == 3, text)

    # Search: finds the text written; a hostile pattern is only a pattern.
    text = await call(client, "search_files", {"container_id": cid, "pattern": "needle|nothing-else"})
    check(text.startswith("1 matching line for") and "/workspace/notes/mcp.txt:2:needle in a haystack" in text, text)
    text = await call(client, "search_files", {"container_id": cid, "pattern": "needle", "path": "notes"})
    check("/workspace/notes/mcp.txt:2:needle" in text, text)
    text = await call(client, "search_files", {"container_id": cid, "pattern": "$(touch /tmp/pwned)'\"; touch /tmp/pwned"})
    check(text.startswith("No matches for"), text)
    text = await call(client, "search_files", {"container_id": cid, "pattern": "-v", "path": "notes"})
    check(text.startswith("No matches"), text)
    text = await call(client, "run_command", {"container_id": cid, "command": "test -e /tmp/pwned; echo $?"})
    check("stdout:\n1\n" in text, text)
    text = await call(client, "search_files", {"container_id": cid, "pattern": "x", "path": "/no/such"}, error=True)
    check("No such file or directory" in text, text)

    # Errors: the server's detail, as isError.
    text = await call(client, "run_command", {"container_id": UNKNOWN, "command": "true"}, error=True)
    check(text == f"Container not found: no container with id {UNKNOWN}", text)
    text = await call(client, "read_file", {"container_id": cid, "path": "/no/such/file"}, error=True)
    check("/no/such/file" in text, text)
    text = await call(client, "run_command", {"container_id": cid, "command": "true", "timeout_secs": 0}, error=True)
    check("timeout_secs" in text, text)


async def legacy(client):
    """An agent on a protocol revision with the initialize handshake (most today)."""
    check(client.protocol_version < "2026-07-28", f"negotiated {client.protocol_version}")
    listed = await client.list_tools()
    check({tool.name for tool in listed.tools} == TOOLS, "tools over the handshake")
    text = await call(client, "run_command", {"container_id": UNKNOWN, "command": "true"}, error=True)
    check(text == f"Container not found: no container with id {UNKNOWN}", text)
    await call(client, "list_sandboxes", {})


def leaves(err):
    """The exceptions inside (nested) exception groups (anyio's task groups raise those)."""
    if isinstance(err, BaseExceptionGroup):
        return [leaf for inner in err.exceptions for leaf in leaves(inner)]
    return [err]


async def main(argv):
    mode, rest = argv[0], argv[1:]
    timeout = httpx2.Timeout(120.0)
    if mode == "refused":
        url, binary, server_url = rest
        # The SDK reports a refused request without its status: note the statuses seen.
        statuses = []

        async def note(response):
            statuses.append(response.status_code)

        http = httpx2.AsyncClient(timeout=timeout, event_hooks={"response": [note]})
        errors = None
        try:
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                await client.list_tools()
        except Exception as err:  # noqa: BLE001: any failure to connect is what we expect
            errors = [f"{type(leaf).__name__}: {leaf}" for leaf in leaves(err)]
        check(errors is not None, "connected over HTTP without a key")
        with tempfile.TemporaryDirectory() as cwd:
            params = StdioServerParameters(command=binary, args=["mcp"], env={"REPOBOX_URL": server_url}, cwd=cwd)
            async with Client(params, read_timeout_seconds=120) as client:
                text = await call(client, "list_sandboxes", {}, error=True)
                check(text.startswith("Unauthorized: "), text)
        print(json.dumps({"statuses": statuses, "errors": errors}))
        return
    if mode == "stdio":
        binary, server_url, repo_url, branch, head, *key = rest
        env = {"REPOBOX_URL": server_url}
        if key:
            env["REPOBOX_API_KEY"] = key[0]
        with tempfile.TemporaryDirectory() as cwd:
            params = StdioServerParameters(command=binary, args=["mcp"], env=env, cwd=cwd)
            async with Client(params, read_timeout_seconds=120) as client:
                container_id = await scenario(client, repo_url, branch, head)
            async with Client(params, read_timeout_seconds=120, mode="legacy") as client:
                await legacy(client)
    elif mode == "http":
        url, repo_url, branch, head, *key = rest
        headers = {"Authorization": f"Bearer {key[0]}"} if key else {}
        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
            async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=120) as client:
                container_id = await scenario(client, repo_url, branch, head)
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                await legacy(client)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps({"container_id": container_id}))


if __name__ == "__main__":
    try:
        anyio.run(main, sys.argv[1:])
    except CheckFailed as failed:
        print(json.dumps(transcript, indent=1), file=sys.stderr)
        print(f"CHECK FAILED: {failed}", file=sys.stderr)
        sys.exit(1)
    finally:
        if os.environ.get("MCP_TRANSCRIPT"):
            with open(os.environ["MCP_TRANSCRIPT"], "a") as out:
                json.dump(transcript, out, indent=1)
