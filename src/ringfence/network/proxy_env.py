"""Where the filtering proxy listens, and what tells programs to use it.

One port for every platform: on Linux the proxy listens inside the sandbox's own network
namespace (so the port is never taken there); on macOS the runner starts it on the host's
loopback; on Windows ``ringfence setup`` opens that loopback port alone to the offline user.
"""

from __future__ import annotations

import shlex

from ringfence.network.connect import ENV_NAME, SOURCE, proxy_command

PROXY_PORT = 3128
"""The filtering proxy's port (all platforms; ``ringfence setup --proxy-port`` may change it
on Windows, where it lives on the host's loopback)."""


def git_ssh_command() -> str:
    """ssh for git, reaching allowed hosts (``--allow-domain github.com:22``) through the
    proxy: a ProxyCommand that runs ringfence's connector (see network/connect.py)."""
    return f"ssh -o ProxyCommand={shlex.quote(proxy_command())}"


def git_ssh_environment() -> dict[str, str]:
    """``GIT_SSH_COMMAND`` and the connector's source, for a sandbox without one of its own."""
    return {"GIT_SSH_COMMAND": git_ssh_command(), ENV_NAME: SOURCE}


def proxy_environment(port: int) -> dict[str, str]:
    """What common tools read to use a proxy: curl, pip, uv, git, npm/yarn/pnpm, Node's fetch,
    the JVM. A program that ignores them simply cannot connect."""
    http = f"http://127.0.0.1:{port}"
    env = {
        "RINGFENCE_PROXY": http,
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "HTTP_PROXY": http,
        "HTTPS_PROXY": http,
        "ALL_PROXY": f"socks5h://127.0.0.1:{port}",
    }
    env.update({k.lower(): v for k, v in env.items()})
    env.update(
        {
            "npm_config_proxy": http,
            "npm_config_https_proxy": http,
            "YARN_HTTP_PROXY": http,
            "YARN_HTTPS_PROXY": http,
            "NODE_USE_ENV_PROXY": "1",
            "GLOBAL_AGENT_HTTP_PROXY": http,
            "JAVA_TOOL_OPTIONS": (
                f"-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={port} "
                f"-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={port} "
                "-Dhttp.nonProxyHosts=localhost|127.0.0.1"
            ),
        }
    )
    return env
