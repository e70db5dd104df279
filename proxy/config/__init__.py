"""Every settings model, the loader (YAML, environment overrides), the schema: the ground floor."""
