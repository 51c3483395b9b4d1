"""The config section of the mode ``ssh``, and the host-checking keys ``[cluster]`` shares.

A light module (declarations only): the mode registry reads it to check a config file without
importing the ssh backend or paramiko.
"""

from __future__ import annotations

from remotemap.backends.local_options import PRELOAD, STAGING
from remotemap.config.declarations import Key, Section

#: How hosts are found and trusted, the same for [ssh] hosts and a [cluster] submitting host.
HOST_CHECKING = (
    Key("known_hosts", "str", "", "extra known_hosts file (~/.ssh/known_hosts is read too)",
        is_path=True),
    Key("ssh_config", "str", "", "OpenSSH client config; empty = ~/.ssh/config", is_path=True),
    Key("host_key_policy", "str", "reject", "unknown host keys: reject, or accept-new",
        choices=("reject", "accept-new")),
)

SSH = Section(
    "ssh",
    "mode 'ssh': tasks run on other hosts over SSH (paramiko), results copied back over SFTP",
    (
        Key("hosts", "list[str]", [], "hosts to run on: ssh-config aliases or [user@]host[:port]"),
        Key("user", "str", "", "login user; empty = from ~/.ssh/config, else the local user"),
        Key("port", "int", 0, "SSH port; 0 = from ~/.ssh/config, else 22", minimum=0),
        Key("key_file", "str", "", "private key; empty = ~/.ssh/config, agent, default keys",
            is_path=True),
        *HOST_CHECKING,
        Key("connect_timeout", "float", 10.0, "seconds to connect before giving a host up",
            minimum=0.1),
        Key("python", "str", "python3", "the Python on the hosts (remotemap installed in it)"),
        Key("remote_dir", "str", ".cache/remotemap/runs",
            "where run directories go on the hosts (relative = under the remote home)"),
        Key("n_jobs", "int", 0, "tasks at once per host; 0 = the host's CPUs"),
        Key("chunksize", "int", 0, "tasks per chunk sent to a host; 0 = automatic", minimum=0),
        Key("keep_remote_files", "bool", False, "keep the run directories on the hosts"),
        Key("keep_alive", "float", 300.0,
            "seconds each host's connection and worker server stay up after a call, for the "
            "next call with the same settings; 0 = close them at once", minimum=0.0),
        PRELOAD,
        Key("fetch", "list[str]", [],
            "glob patterns of files tasks write in their working directory, copied back"),
        Key("fetch_dir", "str", "remotemap-files",
            "local directory the fetched files go to, one subdirectory per task", is_path=True),
        *STAGING,
        Key("stage_dir", "str", ".cache/remotemap/staged",
            "where staged inputs go on the hosts (relative = under the remote home)"),
    ),
)  # fmt: skip
