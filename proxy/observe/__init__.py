"""What the proxy shows of itself: the observer on the request path, Prometheus metrics, stats
windows, alerts, logs, health. Reads outcomes; imports upstream/ and below."""
