"""Every settings model, the loader (YAML, environment overrides), the schema, and the pure parsing
their validation needs (sizes, rates, hosts, networks, RE2 patterns): the ground floor. Imports
no other proxy package and no I/O library (tests/config/test_imports.py checks)."""
