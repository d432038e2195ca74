"""The project's own Emporia API simulator: a deterministic usage model behind real HTTP.

Nothing in vuegraf imports this package; tests, the demo and `vuegraf-simulator` do.
"""

from vuegraf.simulator.model import Scenario, UsageModel, bucket_floor, bucket_next
from vuegraf.simulator.server import SimulatorServer

__all__ = ["Scenario", "SimulatorServer", "UsageModel", "bucket_floor", "bucket_next"]
