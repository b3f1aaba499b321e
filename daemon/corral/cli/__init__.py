"""corralctl: drive corrald over its local admin socket.

client     the admin API's vocabulary, exit codes, errors, and the unix-socket HTTP client
render     tables, key: value mappings, times, JSON/YAML; Output (the one place that renders)
agents     status, agents, agent, mode, reset
baselines  baseline show/export/import, diff, accept; the review YAML layout
events     events, events --follow
aibom      aibom
run        run (the fenced child, signal forwarding)
parser     build_parser: options, help texts, examples
entry      main (the `corralctl` console script and `python -m corral.cli`)
"""

from .entry import main

__all__ = ["main"]
