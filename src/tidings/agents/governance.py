"""Who may run which agent tool: the key's permissions, the account's AI settings, and whether the call
touches live data.

- ``read`` tools need the key's read permission; tools that return personal data (profiles, search
  results, message recipients) also need ``read_pii``.
- ``write`` tools need ``write``, except as a dry run, which changes nothing and needs only ``read``.
- A write that touches **live data** (people, active campaigns, segments active campaigns use, sends,
  broadcasts) is allowed to an MCP key that has ``write_live``, or when the account allows agents to edit
  live data; the built-in assistant needs both (the setting on, and a key that may write live data).
- ``mcp_enabled`` off refuses every MCP call; ``ai_enabled`` off refuses the assistant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Surface = Literal["mcp", "assistant"]


@dataclass(frozen=True)
class Policy:
    permissions: frozenset[str]
    surface: Surface
    ai_enabled: bool = True
    mcp_enabled: bool = True
    allow_agent_edit_live_data: bool = False

    def refusal(self, access: str, *, live: bool, dry_run: bool) -> str | None:
        """Why a call may not run (a message telling the agent what would allow it), or None."""
        if self.surface == "mcp" and not self.mcp_enabled:
            return "the MCP server is turned off for this account (AI settings: mcp_enabled is false)"
        if self.surface == "assistant" and not self.ai_enabled:
            return "AI features are turned off for this account (AI settings: ai_enabled is false)"
        if access == "list":
            return None  # what exists (tools, prompts) is no secret from any key
        if access in ("read", "read_pii") or dry_run:
            if "read" not in self.permissions:
                return "this API key lacks the read permission"
            if access == "read_pii" and "read_pii" not in self.permissions:
                return (
                    "this tool returns personal data and the API key lacks the read_pii permission; "
                    "use a tool that returns counts or ids, or a key with read_pii"
                )
            return None
        if "write" not in self.permissions:
            return "this API key lacks the write permission; call the tool with dry_run: true to preview"
        if live and not self._may_edit_live():
            if self.surface == "assistant":
                return (
                    "this change touches live data and the account does not allow the agent to edit live "
                    "data (AI settings: allow_agent_edit_live_data); call it with dry_run: true to show "
                    "the change, and ask an admin"
                )
            return (
                "this change touches live data: it needs an API key with the write_live permission, or "
                "the account setting allow_agent_edit_live_data; call it with dry_run: true to preview"
            )
        return None

    def _may_edit_live(self) -> bool:
        if self.surface == "assistant":
            return self.allow_agent_edit_live_data and "write_live" in self.permissions
        return "write_live" in self.permissions or self.allow_agent_edit_live_data
