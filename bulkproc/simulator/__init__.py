"""A local stand-in for the Hospital Directory API, with its limits, delays and scripted faults.

rules.py (validation and caps, pure), limits.py (rate windows), faults.py (scripted faults),
app.py (the Flask app and its state), serving.py (a real socket, outages), cli.py (command line).
"""

from __future__ import annotations

from .app import Simulator, create_simulator
from .cli import main
from .faults import FAULT_KINDS
from .rules import OPS
from .serving import ServedSimulator, serve

__all__ = ["FAULT_KINDS", "OPS", "ServedSimulator", "Simulator", "create_simulator", "main", "serve"]
