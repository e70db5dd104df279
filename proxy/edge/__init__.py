"""Per-route rules at the edge: CORS, compression, rate limiting, token revocation. Imports
observe/ and below."""
