"""The engine: key names, Lua scripts, the KEYS/ARGV contract, the sans-I/O core and coordination.

Library code only; the public names are re-exported by :mod:`swarm_redis`."""
