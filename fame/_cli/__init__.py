"""Command-line programs: ``fame`` (run nodes, manage the local services, inspect
stores) and ``fame-client`` (the storage example's client).

Everything here is private; the entry points are ``fame._cli.fame:main`` and
``fame._cli.client:main``.
"""
