"""The Redis tier shared by every instance: the connection, its guard and count breaker, the L2
store, the purge log and its follower, the revocation list's shared set and its follower.
Imports cache/, http/ and config/ only."""
