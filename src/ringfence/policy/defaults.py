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
    ".gemini",
    ".cursor",
    ".opencode",
    "opencode.json",
    ".continue",
    ".windsurf",
    ".roo",
    ".kiro",
    ".amazonq",
    ".zed",
    ".crush.json",
    ".aider.conf.yml",
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

# Other coding agents' credentials, the same on every platform.
AGENT_CREDENTIALS: tuple[str, ...] = (
    ".codex/auth.json",
    ".claude/.credentials.json",
    ".claude.json",
    ".config/github-copilot",
    ".config/anthropic",
    ".config/openai",
)

# Credentials every platform keeps in the same dotfiles under the home directory: each
# backend's deny-read list starts with these.
CREDENTIAL_DOTFILES: tuple[str, ...] = (
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
    ".config/git/credentials",
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".pypirc",
    ".pgpass",
    ".my.cnf",
    ".mylogin.cnf",
    ".vault-token",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".gem/credentials",
    ".terraform.d/credentials.tfrc.json",
    ".m2/settings-security.xml",
)

# Relative to $HOME: credential stores, browser profiles, keyrings, shell histories and other
# agents' credentials. Hidden (masked) inside the sandbox when they exist.
HOME_DENY_READ: tuple[str, ...] = (
    *CREDENTIAL_DOTFILES,
    ".local/share/keyrings",
    ".local/share/kwalletd",
    ".mozilla",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".config/vivaldi",
    *SHELL_HISTORIES,
    *AGENT_CREDENTIALS,
)

# Entries of the host's /tmp (shell-style patterns on the top-level name) that hold the user's
# credentials or a channel to their agents: Kerberos ticket caches, ssh-agent directories,
# tmux/screen servers, X11 sockets and authority cookies. The sandbox reads host /tmp through
# its own layer (so the harness's scripts and venvs are there), but not these.
TMP_DENY_READ: tuple[str, ...] = (
    "krb5cc*",
    "ssh-*",
    "tmux-*",
    "screens",
    "uscreens",
    ".X11-unix",
    ".ICE-unix",
    ".XIM-unix",
    ".font-unix",
    "xauth*",
    ".xauth*",
    "serverauth.*",
    ".X*-lock",
    "gpg-*",
    "keyring-*",
    "pulse-*",
    "vscode-ipc-*",
    "systemd-private-*",
)

# Relative to $HOME: where a write runs later with the user's full rights outside any sandbox
# (login sessions, desktop autostart, PATH lookups, PAM, tools' own config) or reaches
# ringfence's own state. Read-only whenever they lie inside a writable root, which for $HOME
# itself happens only on explicit request (the cwd default refuses $HOME).
HOME_PROTECTED: tuple[str, ...] = (
    ".ssh",
    ".config/systemd",
    ".config/autostart",
    ".config/environment.d",
    ".config/fish",
    ".config/nvim",
    ".vimrc",
    ".vim",
    ".emacs",
    ".emacs.d",
    ".inputrc",
    ".local/share/applications",
    ".local/share/systemd",
    ".local/bin",
    "bin",
    "go/bin",
    "miniconda3",
    "anaconda3",
    "miniforge3",
    "mambaforge",
    "node_modules",
    "go/pkg/mod",
    "perl5",
    "R",
    "snap",
    ".pam_environment",
    ".xprofile",
    ".xsession",
    ".xsessionrc",
    ".xinitrc",
    ".Xresources",
    ".npmrc",
    ".yarnrc",
    ".pypirc",
    ".pip",
    ".config/pip",
    ".cargo/config.toml",
    ".cargo/config",
    ".cargo/bin",
    ".gradle/init.d",
    ".gradle/gradle.properties",
    ".m2/settings.xml",
    ".docker",
    ".kube",
    ".aws",
    ".gnupg",
    ".local/state/ringfence",
    ".cache/ringfence",
)
# Relative to $XDG_CONFIG_HOME and $XDG_DATA_HOME (default ~/.config, ~/.local/share), where
# those are set elsewhere: the same kind of places, found where the programs look.
XDG_CONFIG_PROTECTED: tuple[str, ...] = (
    "systemd",
    "autostart",
    "environment.d",
    "git",
    "fish",
    "nvim",
    "pip",
    "direnv",
    "containers",
    "Code/User",
    "ringfence",
    "plasma-workspace",
    "tmux",
    "i3",
    "sway",
    "hypr",
    "kitty",
)
XDG_DATA_PROTECTED: tuple[str, ...] = (
    "systemd",
    "applications",
    "bash-completion",
    "nvim",
    "dbus-1",
    "gnome-shell",
    "kservices5",
    "kservices6",
    "plasma",
)
# Spools whose entries run as the user (cron, at), protected if a writable root holds them.
SYSTEM_PROTECTED: tuple[str, ...] = (
    "/var/spool/cron",
    "/var/spool/at",
    "/var/spool/anacron",
    "/etc/cron.d",
)

# Relative to $HOME (".config/" meaning $XDG_CONFIG_HOME where that is set): files that mix
# settings a command needs with credentials, and the format of each. On Linux the sandbox sees
# a scrubbed copy (policy/scrub.py: settings kept, tokens, passwords and credential helpers
# out) instead of nothing; a file that cannot be scrubbed is hidden. macOS and Windows hide
# the ones listed in HOME_DENY_READ.
HOME_SCRUB: tuple[tuple[str, str], ...] = (
    (".npmrc", "npmrc"),
    (".yarnrc", "yarnrc"),
    (".yarnrc.yml", "yarnrc.yml"),
    (".pypirc", "pypirc"),
    (".config/pip/pip.conf", "pip.conf"),
    (".pip/pip.conf", "pip.conf"),
    (".docker/config.json", "docker"),
    (".gitconfig", "gitconfig"),
    (".config/git/config", "gitconfig"),
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
# Names the patterns above would catch that hold no secret: where a tool looks for its
# settings and files (a path is not a credential; the files themselves stay hidden), which
# region or profile to use, a CA bundle. Kept unless the user unsets them.
SECRET_ENV_ALLOW: tuple[str, ...] = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_OUTPUT",
    "AWS_CA_BUNDLE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_SDK_LOAD_CONFIG",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_RETRY_MODE",
    "AWS_MAX_ATTEMPTS",
    "AWS_PAGER",
    "AZURE_CONFIG_DIR",
    "AZURE_CORE_OUTPUT",
    "AZURE_DEFAULTS_LOCATION",
    "AZURE_DEFAULTS_GROUP",
    # Desktop-session facts that *SESSION* catches: names and kinds, not credentials.
    "XDG_SESSION_TYPE",
    "XDG_SESSION_CLASS",
    "XDG_SESSION_DESKTOP",
    "DESKTOP_SESSION",
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
