"""AWS plumbing shared by the core and the sinks: request signing."""
