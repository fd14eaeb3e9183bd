"""Agents: @operation, BaseAgent, the node, proxies, calls and streams."""
