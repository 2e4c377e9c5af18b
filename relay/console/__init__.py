"""The crisis-team web console (``relay console``): compose, sign and send decisions, follow their
delivery, read the inbox and the network's state, in a browser, in Dutch or English.

It talks to its node only through the local API (relay.api) and signs with keys it keeps
encrypted under each user's password (relay.console.accounts). See docs/console.md.
"""
