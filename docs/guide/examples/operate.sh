#!/usr/bin/env bash
# The guide's operations walk-through, run for real by tests/test_docs.py:
# a new project, the services up, a value stored, a live backup, a check,
# a restore, a salvage, a new master key, and the services up again.
#
# Run it in an empty directory with `fame` and `fame-client` on PATH:
#   mkdir /tmp/demo && cd /tmp/demo && bash /path/to/docs/guide/examples/operate.sh
# FAME_SENTINEL_PORT picks another port than 8000.
set -euo pipefail

# --8<-- [start:up]
fame init                      # conf/*.env, conf/policy.toml, the keys, a starter agent
fame up                        # sentinel and node in the background; waits until they answer
fame status
fame-client store greeting hello
fame-client get greeting
# --8<-- [end:up]

# --8<-- [start:backup]
fame backup data/agent backups/agent-1      # consistent, while the node runs
fame logs -n 5                              # the end of run/sentinel.log and run/agent.log
fame stop
fame check data/agent                       # every page and record, read on a private copy
# --8<-- [end:backup]

# --8<-- [start:restore]
fame restore backups/agent-1 --to data/agent --yes   # verified first; the old directory is kept aside
fame salvage data/agent storage_agent_namespace --to salvaged   # every readable record, into a new file
# --8<-- [end:restore]

# --8<-- [start:rekey]
# The backup stays under the current key: keep that key with it, then rotate.
(umask 077 && grep '^FAME_STORAGE_MASTER_KEY=' conf/secrets.env > backups/agent-1.key)
fame rekey                                  # every file of data/ under a new key, crash-safe
fame check backups/agent-1 --config backups/agent-1.key
fame up
fame-client get greeting
fame stop
# --8<-- [end:rekey]
