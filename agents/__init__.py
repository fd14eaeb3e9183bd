"""Example agents shipped with fame; ``agents.storage_agent`` is the seed's storage example."""
