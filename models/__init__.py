"""Transform and Trainer module files.

TFX packages every .py file in this folder into the user-code wheel whose hash is
part of the Transform and Trainer cache keys, so any edit here correctly re-runs them.
Keep pipeline wiring and other code that does not run inside those components out.
"""
