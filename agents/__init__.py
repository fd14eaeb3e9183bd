"""The example project's agents (``agents.storage_agent``), loaded by ``fame node`` from here.

Not part of the installed library: ``conf/agent.env`` names the agent as
``agents.storage_agent:StorageAgent@storage@fame.fabric`` and the node
imports it from the project directory. ``fame init`` writes the same agent
as ``storage_agent.py`` into a new project.
"""
