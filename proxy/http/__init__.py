"""Pure HTTP helpers: request targets, hosts, header hygiene, client addresses, credentials,
dates, ranges, linear-time regexes, JSON errors. Imports only config/."""
