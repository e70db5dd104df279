"""The pure RFC 9111 core: policy/ (what may be stored, whether an entry is fresh, ..., one
module per section of the RFC), keys, a route's resolved cache rules, the stored entry and its
byte format, the stored parts of ranges, and the memory store. Imports http/ and config/ only."""
