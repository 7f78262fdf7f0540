"""macOS's own defaults: what stays read-only and what is hidden when the Mac enforces a policy.

The Linux lists (``defaults.py``) name ``.config/google-chrome`` and ``.local/share/keyrings``,
which do not exist on a Mac; a Mac keeps the same secrets under ``~/Library`` (keychains,
browser profiles, cookies, mail) and starts programs from ``~/Library/LaunchAgents``. Each
entry here is relative to ``$HOME`` (or, for protected names, a pattern at any depth under a
writable root) and is here because something outside the sandbox reads it or runs it later
with the user's full rights. Pure data: the macOS compiler (``platforms/macos/plan.py``) reads
it through ``Policy.protected_names("macos")`` and ``Policy.deny_read_paths(home, "macos")``.

Paths follow the vendors' documentation of where their data lives; none of this has been
checked on a real Mac.
"""

from __future__ import annotations

import posixpath

from ringfence.policy import defaults

# Shell start-up files: the same names as on Linux (macOS's Terminal starts login shells, so
# .zprofile/.zlogin/.bash_profile run at every new window), and git's own configuration.
SHELL_PROTECTED: tuple[str, ...] = defaults.SHELL_PROTECTED

# Where a file alone makes the Mac start a program later, outside the sandbox: launchd loads
# every property list in LaunchAgents at the next login (LaunchDaemons as root, when a
# writable root reaches /Library); login items were kept in the background task database
# before macOS 13; Folder Actions run the scripts in their folder when a watched folder
# changes. Matched at any depth under a writable root, so they hold when a root contains
# $HOME (``~/Library/LaunchAgents``) and cost nothing otherwise.
PERSISTENCE_PROTECTED: tuple[str, ...] = (
    "Library/LaunchAgents",
    "Library/LaunchDaemons",
    "Library/Application Support/com.apple.backgroundtaskmanagementagent",
    "Library/Scripts/Folder Action Scripts",
)

# The same places as paths, for a writable root that *is* one of the directories a name
# starts with (a root of ~/Library holds LaunchAgents/, which the relative name
# "Library/LaunchAgents" does not reach): relative to $HOME, and the system's own under /.
HOME_PERSISTENCE: tuple[str, ...] = (
    "Library/LaunchAgents",
    "Library/Application Support/com.apple.backgroundtaskmanagementagent",
    "Library/Scripts/Folder Action Scripts",
)
SYSTEM_PERSISTENCE: tuple[str, ...] = ("/Library/LaunchAgents", "/Library/LaunchDaemons")


def persistence_paths(home: str) -> tuple[str, ...]:
    """``HOME_PERSISTENCE`` under ``home``, then ``SYSTEM_PERSISTENCE``."""
    return (*(posixpath.join(home, rel) for rel in HOME_PERSISTENCE), *SYSTEM_PERSISTENCE)


# Relative to $HOME: hidden (reads and writes denied) when the Mac enforces the policy.
HOME_DENY_READ: tuple[str, ...] = (
    *defaults.CREDENTIAL_DOTFILES,  # credentials every platform keeps in the same dotfiles
    # the login keychain and the system's stores of cookies, mail, messages and accounts
    "Library/Keychains",
    "Library/Cookies",
    "Library/HTTPStorages",
    "Library/Accounts",
    "Library/Mail",
    "Library/Containers/com.apple.mail",
    "Library/Messages",
    # browser profiles (cookies, saved passwords, session tokens)
    "Library/Safari",
    "Library/Containers/com.apple.Safari",
    "Library/Application Support/Google/Chrome",
    "Library/Application Support/Google/Chrome Beta",
    "Library/Application Support/Google/Chrome Canary",
    "Library/Application Support/Chromium",
    "Library/Application Support/Microsoft Edge",
    "Library/Application Support/BraveSoftware",
    "Library/Application Support/Vivaldi",
    "Library/Application Support/Arc",
    "Library/Application Support/com.operasoftware.Opera",
    "Library/Application Support/Firefox",
    "Library/Thunderbird",
    # password managers' local vaults
    "Library/Group Containers/2BUA8C4S2C.com.1password",
    "Library/Application Support/1Password",
    "Library/Application Support/Bitwarden",
    "Library/Containers/com.bitwarden.desktop",
    # shell and REPL histories (Terminal keeps zsh's per window in .zsh_sessions)
    *defaults.SHELL_HISTORIES,
    ".zsh_sessions",
    *defaults.AGENT_CREDENTIALS,
)

# What a file rule cannot settle: said in the plan's notes, so nobody reads the lists above as
# "persistence is stopped".
PERSISTENCE_NOTES: tuple[str, ...] = (
    "persistence through files: writes outside the writable roots are denied, and "
    "~/Library/LaunchAgents, the login items file (macOS 12 and earlier) and Folder Action "
    "scripts stay read-only even inside one: no launchd job or login item left as a file",
    "persistence without a file is not covered by these rules and is untested: `launchctl "
    "submit`/`bootstrap` ask launchd over its bootstrap port, which the profile does not "
    "filter; programs opened through LaunchServices (`open`) would start outside the sandbox, "
    "and the profile never grants `lsopen`, the operation that gates them (so `open` should "
    "fail); crontab and at write through setuid helpers to /private/var/at, outside every "
    "writable root, which the write rule should refuse. None of this was checked on a Mac",
)
