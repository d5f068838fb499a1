"""schoolnet: monitoring for school networks (shared contracts of agent and collector)."""

__version__ = "0.1.0"
