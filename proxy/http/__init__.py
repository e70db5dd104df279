"""Pure HTTP helpers: request targets, hosts, header hygiene, the Vary list, client addresses,
credentials, dates, ranges, linear-time regexes, JSON errors. Imports only config/."""
