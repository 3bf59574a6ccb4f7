"""What the Ansible modules do on a host, without Ansible, so that unit tests reach it.

One direction: `attempt` (one experiment's attempt) -> `execute` (one exec of `lem
experiment`, restart and timeout policy) -> `compose` (the host's compose project);
`attempt` -> `gaps` -> `compose`; `share` (lem_manifest) and `result_file` beside;
`errors` at the bottom. Docker is reached only through `compose.Compose`.
"""
