"""The registry wing: registered versions and their aliases, promotion and roll-back, predicting
with @champion, and `make serve`'s scoring server."""
