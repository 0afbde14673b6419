"""Desired against live: read a revision into a plan (`read`), the Plan value (`plan`), and its
execution against Serve (`apply`)."""
