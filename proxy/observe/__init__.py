"""What the proxy shows of itself: observer.py counts each response on the request path (meters in
metrics.py, the access log in logs.py); ticker.py keeps the rolling window (stats_window.py),
alerts and stats line once a second; documents.py and catalogue.py turn the counters into the
admin API's JSON and Prometheus series; health.py probes the upstream and Redis. Reads the
rest of the proxy through values handed in (sources.py); imports upstream/ and below."""
