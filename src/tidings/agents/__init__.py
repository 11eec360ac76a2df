"""Agents: the tools AI agents use to operate a workspace, their governance, the MCP server and the
assistant."""
