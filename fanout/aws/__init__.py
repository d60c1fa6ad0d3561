"""AWS plumbing shared by the core and the sinks: one session and its clients, SigV4 signing."""
