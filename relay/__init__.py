"""Store-and-forward relay for signed crisis decisions over MQTT and Meshtastic LoRa mesh."""

__version__ = "0.1.0"
