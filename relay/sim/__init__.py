"""Simulation and test harness: real brokers on loopback, fault injection, throwaway PKI."""
