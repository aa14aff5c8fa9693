"""A model server that speaks TensorFlow Serving's REST API, and a client for it.

TF Serving's binary and Docker cannot run on the project's machines, so this package serves
the Pusher's directory (`OUTPUT/serving/<model>/<version>/`) with the same URLs, JSON shapes and
error codes, and the client and tests work unchanged against a real TF Serving. See README.md.
"""
