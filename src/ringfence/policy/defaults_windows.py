"""Windows's own defaults: what stays read-only and what is hidden when Windows enforces a policy.

The Linux lists (``defaults.py``) name ``.config/google-chrome`` and ``.local/share/keyrings``;
Windows keeps browser profiles, saved credentials and the DPAPI master keys that decrypt them
under the user's application-data folders instead, and starts programs from the Startup folder
and PowerShell profiles. Pure data and pure functions: the Windows compiler
(``platforms/windows/plan.py``) and its fact gathering (``facts.py``) read these through
``Policy.protected_names("windows")`` and ``Policy.deny_read_paths(home, "windows", ...)``.

Each deny-read entry names the folder it lives in, as Windows spells it: ``%USERPROFILE%``
(the home directory), ``%APPDATA%`` (roaming application data, ``AppData\\Roaming`` by
default) or ``%LOCALAPPDATA%`` (``AppData\\Local``), then a ``/``-separated path. A user whose
application-data folders are redirected to another drive path gets both places hidden: the
default one under the profile and the one the environment names.

Paths follow the vendors' documentation of where their data lives; none of this has been
checked on a real Windows machine.
"""

from __future__ import annotations

from collections.abc import Mapping

from ringfence.errors import PolicyError
from ringfence.policy import defaults, winpaths

# The folders an entry may start from, and where each lies under the profile by default.
BASES: dict[str, str] = {
    "USERPROFILE": "",
    "APPDATA": "AppData/Roaming",
    "LOCALAPPDATA": "AppData/Local",
}

# Shell start-up files read by Git Bash, MSYS2 and Cygwin shells, and git's configuration.
SHELL_PROTECTED: tuple[str, ...] = defaults.SHELL_PROTECTED

# Where a file alone makes Windows or the user's tools start a program later, outside the
# sandbox: everything in the Startup folder runs at the next logon; PowerShell runs its
# profile scripts (and auto-loads the modules beside them) at every start, Windows
# PowerShell 5.1 from Documents\WindowsPowerShell and PowerShell 7 from Documents\PowerShell;
# Windows Terminal starts whatever command line its settings name. Matched at any depth under
# a writable root (so also under a OneDrive-redirected Documents).
PERSISTENCE_PROTECTED: tuple[str, ...] = (
    "Microsoft/Windows/Start Menu/Programs/Startup",
    "Documents/PowerShell",
    "Documents/WindowsPowerShell",
    "Packages/Microsoft.WindowsTerminal_8wekyb3d8bbwe/LocalState",
)

# The same places as paths, for a writable root that *is* one of the directories a name
# starts with (a root of Documents holds PowerShell\, which the relative name
# "Documents/PowerShell" does not reach).
PERSISTENCE_PATHS: tuple[str, ...] = (
    "%APPDATA%/Microsoft/Windows/Start Menu/Programs/Startup",
    "%USERPROFILE%/Documents/PowerShell",
    "%USERPROFILE%/Documents/WindowsPowerShell",
    "%LOCALAPPDATA%/Packages/Microsoft.WindowsTerminal_8wekyb3d8bbwe/LocalState",
)

# Hidden (read and write denied) where the sandbox users could otherwise reach them.
DENY_READ: tuple[str, ...] = (
    # credentials kept in the same dotfiles as elsewhere
    "%USERPROFILE%/.ssh",
    "%USERPROFILE%/.aws",
    "%USERPROFILE%/.azure",
    "%USERPROFILE%/.config/hub",
    "%USERPROFILE%/.docker/config.json",
    "%USERPROFILE%/.kube",
    "%USERPROFILE%/.netrc",
    "%USERPROFILE%/_netrc",
    "%USERPROFILE%/.git-credentials",
    "%USERPROFILE%/.npmrc",
    "%USERPROFILE%/.yarnrc",
    "%USERPROFILE%/.yarnrc.yml",
    "%USERPROFILE%/.pypirc",
    "%USERPROFILE%/.vault-token",
    "%USERPROFILE%/.cargo/credentials",
    "%USERPROFILE%/.cargo/credentials.toml",
    "%USERPROFILE%/.gem/credentials",
    "%USERPROFILE%/.m2/settings-security.xml",
    # the same tools' credentials where their Windows builds keep them
    "%APPDATA%/GitHub CLI",
    "%APPDATA%/gcloud",
    "%APPDATA%/gnupg",
    "%APPDATA%/postgresql/pgpass.conf",
    "%APPDATA%/MySQL/.mylogin.cnf",
    "%APPDATA%/terraform.d/credentials.tfrc.json",
    # Windows's own secrets: Credential Manager's files, the vaults, the DPAPI master keys
    # that decrypt every DPAPI blob of the user (browser keys included), private keys
    "%APPDATA%/Microsoft/Credentials",
    "%LOCALAPPDATA%/Microsoft/Credentials",
    "%APPDATA%/Microsoft/Vault",
    "%LOCALAPPDATA%/Microsoft/Vault",
    "%APPDATA%/Microsoft/Protect",
    "%APPDATA%/Microsoft/Crypto",
    # browser profiles (cookies, saved passwords, session tokens); User Data only, so a
    # per-user install's program directory stays runnable
    "%LOCALAPPDATA%/Google/Chrome/User Data",
    "%LOCALAPPDATA%/Google/Chrome Beta/User Data",
    "%LOCALAPPDATA%/Google/Chrome SxS/User Data",
    "%LOCALAPPDATA%/Chromium/User Data",
    "%LOCALAPPDATA%/Microsoft/Edge/User Data",
    "%LOCALAPPDATA%/BraveSoftware/Brave-Browser/User Data",
    "%LOCALAPPDATA%/Vivaldi/User Data",
    "%APPDATA%/Opera Software",
    "%APPDATA%/Mozilla/Firefox",
    "%APPDATA%/Thunderbird",
    # password managers' local vaults
    "%LOCALAPPDATA%/1Password",
    "%APPDATA%/1Password",
    "%APPDATA%/Bitwarden",
    # shell and REPL histories (PSReadLine keeps one file per host there)
    "%APPDATA%/Microsoft/Windows/PowerShell/PSReadLine",
    "%USERPROFILE%/.bash_history",
    "%USERPROFILE%/.zsh_history",
    "%USERPROFILE%/.python_history",
    "%USERPROFILE%/.node_repl_history",
    "%APPDATA%/postgresql/psql_history",
    "%USERPROFILE%/.sqlite_history",
    "%USERPROFILE%/.lesshst",
    # other agents' credentials
    "%USERPROFILE%/.codex/auth.json",
    "%USERPROFILE%/.claude/.credentials.json",
    "%USERPROFILE%/.claude.json",
    "%LOCALAPPDATA%/github-copilot",
    "%USERPROFILE%/.config/github-copilot",
)

# What the compiled ACEs and file rules do and do not settle, for the plan's notes.
PERSISTENCE_NOTES: tuple[str, ...] = (
    "persistence through files: the sandbox users can write only the granted roots, and the "
    "Startup folder, PowerShell profiles and Windows Terminal settings found inside one get "
    "deny ACEs (only those that exist before the command)",
    "persistence without a file is not stopped by these rules and is untested: the real "
    "user's registry Run/RunOnce keys and scheduled tasks belong to another account and grant "
    "the sandbox users nothing, and machine-wide ones need an administrator; but a sandbox "
    "user's own Run keys are writable (they run only when that account logs on to a "
    "desktop), and whether the Task Scheduler lets it register a task for itself, which "
    "would run later without the write-restricted token or the job, is not checked",
)


def split(entry: str) -> tuple[str, str]:
    """``"%APPDATA%/Mozilla/Firefox"`` -> ``("APPDATA", "Mozilla/Firefox")``; an entry that
    does not start with a known folder is a bug in this file, refused loudly."""
    head, sep, rel = entry.partition("/")
    name = head[1:-1] if len(head) > 2 and head[0] == head[-1] == "%" else ""
    if not sep or name not in BASES or not rel:
        raise PolicyError(f"windows default {entry!r}: not %FOLDER%/path with a known folder")
    return name, rel


def folder_candidates(home: str, folders: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """For each base, where it is: the default place under ``home`` and, when ``folders``
    (from the environment, see :func:`folders_from_env`) names another, that one too."""
    out: dict[str, tuple[str, ...]] = {}
    for name, default_rel in BASES.items():
        default = winpaths.join(home, default_rel) if default_rel else home
        places = [default]
        if folders.get(name):
            given = winpaths.normalize(name, folders[name])
            if winpaths.key(given) != winpaths.key(default):
                places.append(given)
        out[name] = tuple(places)
    return out


def deny_read_paths(home: str, folders: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every default hidden path, absolute and canonical, for the profile at ``home``."""
    return expand(DENY_READ, home, folders)


def persistence_paths(home: str, folders: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``PERSISTENCE_PATHS``, absolute and canonical, for the profile at ``home``."""
    return expand(PERSISTENCE_PATHS, home, folders)


def expand(
    entries: tuple[str, ...], home: str, folders: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """``%FOLDER%/path`` entries as absolute canonical paths, each in every place its folder
    has (see :func:`folder_candidates`), without duplicates in any letter case."""
    bases = folder_candidates(home, folders or {})
    out: dict[str, str] = {}
    for entry in entries:
        name, rel = split(entry)
        for base in bases[name]:
            path = winpaths.join(base, rel)
            out.setdefault(winpaths.key(path), path)
    return tuple(out.values())


def folders_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``APPDATA`` and ``LOCALAPPDATA`` from an environment, canonical; a value that is not an
    absolute drive path is ignored (the default place under the profile still counts). A
    folder redirected to a share (``\\\\server\\share``) is left out too: the sandbox users
    reach a share as local accounts the server does not know, and a deny ACE naming them there
    would mean nothing to it."""
    upper = {k.upper(): v for k, v in environ.items()}  # Windows names ignore case
    out: dict[str, str] = {}
    for name in ("APPDATA", "LOCALAPPDATA"):
        value = upper.get(name, "").strip().strip('"')
        if not value:
            continue
        try:
            path = winpaths.normalize(name, value)
        except PolicyError:
            continue
        if not path.startswith("\\\\"):
            out[name] = path
    return out
