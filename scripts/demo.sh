#!/usr/bin/env bash
# The README's first command: set up this machine and run the demo campaign.
#
#   scripts/demo.sh [extra ansible-playbook arguments]
#
# Installs what is missing (the .venv with this package and Ansible, the Docker
# engine and Compose v2: scripts/bootstrap.sh), then runs campaigns/demo.yml on
# inventory/local.yml: the CPU image is built offline, the tiny model created,
# every experiment run, and the summary table printed at the end. Running it
# again resumes, and changes nothing once the campaign is complete.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh

# The playbook's controller tasks call the venv's tools (pip, ansible-*).
export PATH="$PWD/.venv/bin:$PATH"
exec ansible-playbook playbooks/campaign.yml -i inventory/local.yml \
    -e lem_campaign_file=campaigns/demo.yml "$@"
