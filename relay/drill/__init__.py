"""Drills: scenarios run on a cluster of nodes, and a report built from the nodes' audit logs.

``events`` turns audit rows (from a running node's API or from its store, offline) into one
timeline of ``Event``; ``report`` analyses that timeline and writes ``report.json`` and a
self-contained ``report.html``.
"""
