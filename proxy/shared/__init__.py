"""The Redis tier shared by every instance: the connection and its guard, the L2 store, the purge
log and its follower. Imports cache/ and below."""
