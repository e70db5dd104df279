"""The demo's sample upstream API (`cacheproxy demo`, `cacheproxy demo-upstream`)."""
