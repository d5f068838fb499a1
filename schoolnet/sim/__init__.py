"""Simulation support: real servers on loopback for the demo and the integration tests."""
