"""The engine: the one place where a command goes from a policy to a result.

Every front end (the CLI, ``Session``, the MCP server, the session server) hands the engine
the same things and gets the same things back::

    resolve.resolve()        user config -> profile -> flags -> project file -> managed ceiling
    approval.ApprovalGate    run / ask / refuse, decided once, with one refusal text
    backends.select()        the platform's Backend (the only ``sys.platform`` test)
    backend.facts()          what the host looks like now (paths, kernel features, install)
    backend.compile()        a pure function to the platform's plan; refuses what the
                             platform cannot enforce (:class:`ringfence.errors.UnenforceableError`)
    backend.run()            the plan, run; a :class:`result.RunResult` and one audit record

The submodules are imported on first use: ``ringfence run --session`` must not pay for them.
"""
