"""The admin API: health, statistics, purge, reload, the dashboard and its static files, and the
merge of several workers' answers. Imports pipeline/ and everything below, never server/."""
