"""One module per command; the only place that prints a result or exits.
"""
