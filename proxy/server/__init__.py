"""The process and its listeners: wiring the app, the proxy port's protocol, workers and their
supervisor, reload, shutdown, the event loop. The top of the house: may import every other
package (and admin/, which it serves)."""
