"""edgetwin: an agentic digital twin for industrial edge boxes.

The packages follow the data flow: ``io`` (drivers) → ``signals`` → ``twin`` → ``detect`` →
``agent`` → ``govern`` → ``act``, with ``store`` beside them. ``plantsim`` is the simulated
reference plant that tests and the demo run against.
"""

__version__ = "0.1.0"
