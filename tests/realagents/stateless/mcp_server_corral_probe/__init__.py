"""An MCP server built on the official Python SDK (mcp 2.x), for test_mcp_stateless.py."""
