"""jobmon on shared state (extra ``jobmon``): see docs/jobmon.md and docs/jobmon-usage.md."""
