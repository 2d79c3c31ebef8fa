"""sandboxer extension `ext.compose-ssh`: sandboxes as Docker Compose projects.

Each sandbox is one Compose project on a Docker host, reached over SSH or on
this machine. The modules, from the bottom up:

- `hosts`: the `[hosts.NAME]` tables of the user's config, parsed and checked;
- `connections`: run a command on a host (SSH or local) with streamed
  stdin/stdout/stderr, an exit status and a deadline;
- `docker`: the Docker and Compose commands run through a connection, and the
  check that a host has what they need;
- `compose`: the project name and compose file generated for a sandbox;
- `settings`: the sandbox settings a profile or user may give;
- `execution` and `files`: running commands in, and copying files to and
  from, a sandbox's container;
- `snapshots`: workspace archives made and kept on the host, restored into
  new sandboxes;
- `extension`: the hook implementations that tie them together.
"""

__version__ = "0.1.0"
