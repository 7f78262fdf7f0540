"""The defaults a user gets without saying anything: what stays read-only, what is hidden.

Kept apart from the model so that docs, ``explain`` and tests read one list. Each entry is here
because something outside the sandbox later reads or runs it with the user's full rights.
"""

from __future__ import annotations

# Names protected at any depth under a writable root (path components; "*" = one component,
# "**" = any number). Git runs hooks and honours config (core.fsmonitor, core.hooksPath,
# filter drivers) outside the sandbox; editors run tasks and devcontainers; direnv sources
# .envrc; agents load MCP servers and settings; shells source rc files.
GIT_PROTECTED: tuple[str, ...] = (
    ".git/config",
    ".git/hooks",
    ".git/modules/**/config",
    ".git/modules/**/hooks",
    ".git/worktrees/*/config.worktree",
    ".gitmodules",
)
STRICT_GIT_PROTECTED: tuple[str, ...] = (".git",)
TOOL_PROTECTED: tuple[str, ...] = (
    ".vscode",
    ".idea",
    ".devcontainer",
    ".envrc",
    ".mcp.json",
    ".codex",
    ".claude",
    ".agents",
    ".ringfence.toml",
)
SHELL_PROTECTED: tuple[str, ...] = (
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".gitconfig",
    ".config/git",
    ".config/ringfence",
)

# Relative to $HOME: the history files interactive shells and REPLs write when they exit. Hidden
# (they hold pasted passwords and tokens; see HOME_DENY_READ), and a refused write to one is
# not reported: every `ringfence shell` would end with one (see escalation.quiet).
SHELL_HISTORIES: tuple[str, ...] = (
    ".bash_history",
    ".zsh_history",
    ".histfile",
    ".sh_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".rediscli_history",
    ".irb_history",
    ".lesshst",
    ".local/share/fish/fish_history",
)
# Variables that move a history file elsewhere (bash, zsh, Python >= 3.13, node, less,
# sqlite, psql, mysql): a refused write to the file they name is not reported either.
HISTORY_ENV_NAMES: tuple[str, ...] = (
    "HISTFILE",
    "PYTHON_HISTORY",
    "NODE_REPL_HISTORY",
    "LESSHISTFILE",
    "SQLITE_HISTORY",
    "PSQL_HISTORY",
    "MYSQL_HISTFILE",
)

# Relative to $HOME: credential stores, browser profiles, keyrings, shell histories and other
# agents' credentials. Hidden (masked) inside the sandbox when they exist.
HOME_DENY_READ: tuple[str, ...] = (
    ".ssh",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".docker/config.json",
    ".kube",
    ".gnupg",
    ".password-store",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".yarnrc",
    ".pypirc",
    ".pgpass",
    ".my.cnf",
    ".vault-token",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".gem/credentials",
    ".terraform.d/credentials.tfrc.json",
    ".m2/settings-security.xml",
    ".local/share/keyrings",
    ".local/share/kwalletd",
    ".mozilla",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".config/vivaldi",
    *SHELL_HISTORIES,
    ".codex/auth.json",
    ".claude/.credentials.json",
    ".claude.json",
    ".config/github-copilot",
    ".config/anthropic",
    ".config/openai",
)

# Sockets and runtime directories that reach services running with the user's full rights
# (a docker socket is root on the host; an ssh-agent signs as the user). Hidden unless named.
RUNTIME_SOCKETS: tuple[str, ...] = (
    "/run/user",
    "/run/docker.sock",
    "/run/docker",
    "/run/containerd",
    "/run/crio",
    "/run/podman",
    "/run/k3s",
    "/run/libvirt",
    "/run/lxd",
    "/run/incus",
    "/run/snapd.socket",
    "/run/snapd-snap.socket",
    "/run/dbus/system_bus_socket",
    "/run/systemd/private",
    "/var/run/docker.sock",
    "/var/snap/lxd/common/lxd",
    "/var/lib/lxd/unix.socket",
    "/var/lib/incus/unix.socket",
)

# Environment variable names dropped before the command starts (fnmatch, case-insensitive).
SECRET_ENV_PATTERNS: tuple[str, ...] = (
    "*KEY*",
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*CREDENTIAL*",
    "*_AUTH",
    "*_AUTH_*",
    "*COOKIE*",
    "*SESSION*",
    "AWS_*",
    "AZURE_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GCLOUD_*",
    "DATABASE_URL",
    "*_DSN",
    "NPM_CONFIG__AUTH*",
)
# Variables that hand the command a channel to a more privileged agent or service.
AGENT_ENV_NAMES: tuple[str, ...] = (
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "DOCKER_HOST",
    "CONTAINER_HOST",
    "XDG_RUNTIME_DIR",
    "WAYLAND_DISPLAY",
    "DISPLAY",
    "XAUTHORITY",
    "KRB5CCNAME",
)
