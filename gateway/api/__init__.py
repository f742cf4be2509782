"""The local control API: HTTP on 127.0.0.1 with token roles, and the CLI's client for it."""
