"""Simulation and test harness, all on loopback: real mosquitto brokers (``broker``), a fault
proxy (``faultproxy``; on a thread: ``faultthread``), throwaway PKI (``pki``), node clusters
(``cluster``), and the Meshtastic device emulator with its channel model (``mesh`` → ``radio`` →
``phone``, which reach back only through the protocols in ``ports``; ``server``; see
docs/emulator.md). The emulator builds the device side from meshtastic's protobufs: with the
thread bridge (relay.links.meshtastic_bridge) the only meshtastic importers in relay.

Import the submodule you need; this package imports nothing at start-up.
"""
