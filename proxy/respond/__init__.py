"""The response side: encoding for the client, relaying an upstream response, the prepared wire
form of a hit, heads made in one pass. Imports edge/ and below."""
