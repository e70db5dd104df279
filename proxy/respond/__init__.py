"""The response side: the request on its way to its response (exchange.py: with its CORS and
rate-limit fields), encoding for the client, relaying an upstream response, the prepared wire
form of a hit, heads made in one pass. Imports edge/ and below."""
