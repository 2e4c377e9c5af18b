"""Simulation and test harness, all on loopback: real mosquitto brokers (``broker``), a fault
proxy (``faultproxy``), throwaway PKI (``pki``), node clusters (``cluster``), and the Meshtastic
device emulator with its channel model (``mesh``, ``server``; see docs/emulator.md).

Import the submodule you need; this package imports nothing at start-up.
"""
