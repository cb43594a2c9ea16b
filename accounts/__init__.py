"""People and permissions: accounts, roles scoped to markets, sessions, login throttling, the audit log."""
