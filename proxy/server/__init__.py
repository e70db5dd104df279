"""The process and its listeners: app.py wires one proxy (and builds the admin API's view of
it), listener.py is the proxy port's protocol; with `workers: N`, supervisor.py runs the worker
processes (worker.py is their entry point, processes.py tracks them); reload, shutdown, the
event loop. The top of the house: may import every other package (and admin/, which it
serves)."""
