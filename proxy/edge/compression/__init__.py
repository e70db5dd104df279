"""Response compression, as the `compression:` section (proxy/config/compression.py) says:

- negotiate.py: the client's Accept-Encoding, which coding it gets (pure, memoised: hits use it);
- codecs.py: gzip/br/zstd encoders and bounded decoders (gzip, br, zstd, deflate);
- headers.py: the header rewrites that go with a new coding (Content-Encoding, ETag, Vary);
- rules.py: which responses a route compresses, with which codings and levels.

Each module imports only those listed above it; nothing here does I/O.
"""
