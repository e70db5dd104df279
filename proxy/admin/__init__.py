"""The admin API: app.py (health, statistics, purge, reload, the dashboard and its static files)
for one proxy, fanout.py for a supervisor of workers, merge.py to make one response of several
workers', revocation.py for revoking tokens. Each app reaches the process it serves only
through a small view (view.py). Imports pipeline/ and everything below, never server/."""
