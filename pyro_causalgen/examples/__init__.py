"""Runnable end-to-end examples (``python -m pyro_causalgen.examples.quickstart``)."""
