"""What one emulated radio remembers: owner, channels, config, module config, canned messages.

Defaults follow a freshly flashed v2.7 device in EU868 on LONG_FAST with the default channel.
``apply_admin`` handles the ADMIN_APP requests the ``meshtastic`` CLI sends to its local node and
returns the reply the firmware would give (a response message, or ``None`` for a plain ACK).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Final

from meshtastic.protobuf import (
    admin_pb2,
    channel_pb2,
    config_pb2,
    connection_status_pb2,
    device_ui_pb2,
    localonly_pb2,
    mesh_pb2,
    module_config_pb2,
)

from relay import airtime

FIRMWARE_VERSION: Final = "2.7.9.emulator"
DEVICE_STATE_VERSION: Final = 24
NUM_CHANNELS: Final = 8
DEFAULT_PSK: Final = b"\x01"  # "AQ==": the well-known default key, index 1
# The expanded default PSK (firmware Channels.cpp defaultpsk); index n replaces the last byte.
_DEFAULT_KEY: Final = bytes.fromhex("d4f1bb3a20290759f0bcffabcf4e6901")

_LoRa = config_pb2.Config.LoRaConfig
# Percent of an hour a region allows on air (firmware RadioInterface.cpp regions table).
REGION_DUTY_CYCLE: Final[dict[int, float]] = {
    _LoRa.EU_433: 0.10,
    _LoRa.EU_868: 0.10,
    _LoRa.UA_433: 0.10,
    _LoRa.UA_868: 0.01,
}

CONFIG_FIELDS: Final = ("device", "position", "power", "network", "display", "lora", "bluetooth")
CONFIG_FIELDS_ALL: Final = (*CONFIG_FIELDS, "security", "sessionkey")
MODULE_FIELDS: Final = tuple(
    f.name for f in module_config_pb2.ModuleConfig.DESCRIPTOR.oneofs[0].fields
)


def preset_display_name(preset_name: str) -> str:
    """``LONG_FAST`` -> ``LongFast``: the channel name a default channel takes from its preset."""
    return "".join(part.capitalize() for part in preset_name.split("_"))


def expand_psk(psk: bytes) -> bytes:
    """The AES key a channel PSK stands for (1-byte PSKs index the well-known default key)."""
    if len(psk) == 1:
        return (
            b""
            if psk[0] == 0
            else _DEFAULT_KEY[:-1] + bytes([(_DEFAULT_KEY[-1] + psk[0] - 1) & 0xFF])
        )
    return psk


def channel_hash(name: str, psk: bytes) -> int:
    """The one-byte channel hash carried in the radio header: xor of name bytes and key bytes."""
    h = 0
    for b in name.encode() + expand_psk(psk):
        h ^= b
    return h


@dataclass
class DeviceSettings:
    """The persistent state of one radio, as protobufs the library understands."""

    node_num: int
    long_name: str
    short_name: str
    preset_name: str = "LONG_FAST"
    owner: mesh_pb2.User = field(init=False)
    config: localonly_pb2.LocalConfig = field(init=False)
    module_config: localonly_pb2.LocalModuleConfig = field(init=False)
    channels: list[channel_pb2.Channel] = field(init=False)
    canned_messages: str = ""
    ringtone: str = ""
    session_passkey: bytes = field(default_factory=lambda: secrets.token_bytes(8))

    def __post_init__(self) -> None:
        self.owner = mesh_pb2.User(
            id=f"!{self.node_num:08x}",
            long_name=self.long_name,
            short_name=self.short_name,
            hw_model=mesh_pb2.HardwareModel.PORTDUINO,
            role=config_pb2.Config.DeviceConfig.Role.CLIENT,
        )
        self.config = _default_config(self.preset_name)
        self.module_config = _default_module_config()
        self.channels = _default_channels()

    # --- what the mesh needs -------------------------------------------------------------------

    @property
    def preset(self) -> airtime.Preset:
        """The modem preset in use (custom modem settings are mapped to the nearest preset)."""
        lora = self.config.lora
        name = config_pb2.Config.LoRaConfig.ModemPreset.Name(lora.modem_preset)
        return airtime.PRESETS.get(name, airtime.PRESETS["LONG_FAST"])

    @property
    def duty_cycle(self) -> float:
        """Allowed fraction of airtime per rolling hour (1.0 when region or override allow all)."""
        lora = self.config.lora
        if lora.override_duty_cycle:
            return 1.0
        return REGION_DUTY_CYCLE.get(lora.region, 1.0)

    @property
    def hop_limit(self) -> int:
        return self.config.lora.hop_limit or 3

    def channel_name(self, index: int) -> str:
        ch = self.channels[index]
        return ch.settings.name or preset_display_name(self.preset.name)

    def channel_hash(self, index: int) -> int | None:
        """Hash of channel ``index``, or ``None`` when that channel is disabled or out of range."""
        if not 0 <= index < NUM_CHANNELS:
            return None
        ch = self.channels[index]
        if ch.role == channel_pb2.Channel.Role.DISABLED:
            return None
        return channel_hash(self.channel_name(index), ch.settings.psk)

    def channel_for_hash(self, h: int) -> int | None:
        """Index of the first enabled channel with hash ``h`` (the one that can decode a frame)."""
        for i in range(NUM_CHANNELS):
            if self.channel_hash(i) == h:
                return i
        return None

    # --- what the host sees ------------------------------------------------------------------

    def metadata(self) -> mesh_pb2.DeviceMetadata:
        return mesh_pb2.DeviceMetadata(
            firmware_version=FIRMWARE_VERSION,
            device_state_version=DEVICE_STATE_VERSION,
            canShutdown=True,
            hasWifi=False,
            hasBluetooth=False,
            hasEthernet=True,
            role=self.config.device.role,
            position_flags=self.config.position.position_flags,
            hw_model=mesh_pb2.HardwareModel.PORTDUINO,
            hasPKC=False,
        )

    def config_message(self, name: str) -> config_pb2.Config:
        out = config_pb2.Config()
        if name == "sessionkey":
            out.sessionkey.SetInParent()
        elif name == "device_ui":
            out.device_ui.SetInParent()
        else:
            getattr(out, name).CopyFrom(getattr(self.config, name))
        return out

    def module_message(self, name: str) -> module_config_pb2.ModuleConfig:
        out = module_config_pb2.ModuleConfig()
        getattr(out, name).CopyFrom(getattr(self.module_config, name))
        return out

    # --- ADMIN_APP ---------------------------------------------------------------------------

    def apply_admin(self, req: admin_pb2.AdminMessage) -> admin_pb2.AdminMessage | None:
        """Apply one admin request; return the response message, or ``None`` when an ACK will do."""
        out = admin_pb2.AdminMessage(session_passkey=self.session_passkey)
        variant = req.WhichOneof("payload_variant")
        match variant:
            case "get_owner_request":
                out.get_owner_response.CopyFrom(self.owner)
            case "get_channel_request":
                index = req.get_channel_request - 1
                if not 0 <= index < NUM_CHANNELS:
                    return None
                out.get_channel_response.CopyFrom(self.channels[index])
            case "get_config_request":
                name = admin_pb2.AdminMessage.ConfigType.Name(req.get_config_request)
                field_name = name.removesuffix("_CONFIG").lower()
                if field_name == "deviceui":
                    field_name = "device_ui"
                out.get_config_response.CopyFrom(self.config_message(field_name))
            case "get_module_config_request":
                mname = admin_pb2.AdminMessage.ModuleConfigType.Name(req.get_module_config_request)
                module = _MODULE_BY_REQUEST.get(mname)
                if module is None:
                    return None
                out.get_module_config_response.CopyFrom(self.module_message(module))
            case "get_device_metadata_request":
                out.get_device_metadata_response.CopyFrom(self.metadata())
            case "get_canned_message_module_messages_request":
                out.get_canned_message_module_messages_response = self.canned_messages
            case "get_ringtone_request":
                out.get_ringtone_response = self.ringtone
            case "get_device_connection_status_request":
                out.get_device_connection_status_response.CopyFrom(
                    connection_status_pb2.DeviceConnectionStatus()
                )
            case "get_ui_config_request":
                out.get_ui_config_response.CopyFrom(device_ui_pb2.DeviceUIConfig())
            case _:
                self._apply_set(req, variant)
                return None
        return out

    def _apply_set(self, req: admin_pb2.AdminMessage, variant: str | None) -> None:
        match variant:
            case "set_owner":
                new = req.set_owner
                if new.long_name:
                    self.owner.long_name = new.long_name
                if new.short_name:
                    self.owner.short_name = new.short_name
                self.owner.is_licensed = new.is_licensed
                if new.HasField("is_unmessagable"):
                    self.owner.is_unmessagable = new.is_unmessagable
            case "set_channel":
                ch = req.set_channel
                if 0 <= ch.index < NUM_CHANNELS:
                    self.channels[ch.index].CopyFrom(ch)
            case "set_config":
                which = req.set_config.WhichOneof("payload_variant")
                if which in CONFIG_FIELDS or which == "security":
                    getattr(self.config, which).CopyFrom(getattr(req.set_config, which))
                    if which == "device":
                        self.owner.role = self.config.device.role
            case "set_module_config":
                which = req.set_module_config.WhichOneof("payload_variant")
                if which is not None:
                    getattr(self.module_config, which).CopyFrom(
                        getattr(req.set_module_config, which)
                    )
            case "set_canned_message_module_messages":
                self.canned_messages = req.set_canned_message_module_messages
            case "set_ringtone_message":
                self.ringtone = req.set_ringtone_message
            case "set_fixed_position":
                self.config.position.fixed_position = True
            case "remove_fixed_position":
                self.config.position.fixed_position = False
            case _:
                # begin/commit_edit_settings, set_time_only, favourites, reboot requests...:
                # acknowledged and otherwise ignored (the emulator has nothing to save or reboot).
                pass


_MODULE_BY_REQUEST: Final[dict[str, str]] = {
    "MQTT_CONFIG": "mqtt",
    "SERIAL_CONFIG": "serial",
    "EXTNOTIF_CONFIG": "external_notification",
    "STOREFORWARD_CONFIG": "store_forward",
    "RANGETEST_CONFIG": "range_test",
    "TELEMETRY_CONFIG": "telemetry",
    "CANNEDMSG_CONFIG": "canned_message",
    "AUDIO_CONFIG": "audio",
    "REMOTEHARDWARE_CONFIG": "remote_hardware",
    "NEIGHBORINFO_CONFIG": "neighbor_info",
    "AMBIENTLIGHTING_CONFIG": "ambient_lighting",
    "DETECTIONSENSOR_CONFIG": "detection_sensor",
    "PAXCOUNTER_CONFIG": "paxcounter",
    "STATUSMESSAGE_CONFIG": "statusmessage",
    "TRAFFICMANAGEMENT_CONFIG": "traffic_management",
    "TAK_CONFIG": "tak",
}


def _default_config(preset_name: str) -> localonly_pb2.LocalConfig:
    cfg = localonly_pb2.LocalConfig()
    cfg.device.role = config_pb2.Config.DeviceConfig.Role.CLIENT
    cfg.device.node_info_broadcast_secs = 10800
    cfg.position.position_broadcast_secs = 900
    cfg.position.position_broadcast_smart_enabled = True
    cfg.position.gps_mode = config_pb2.Config.PositionConfig.GpsMode.NOT_PRESENT
    cfg.power.ls_secs = 300
    cfg.power.wait_bluetooth_secs = 60
    cfg.network.ntp_server = "meshtastic.pool.ntp.org"
    cfg.display.screen_on_secs = 600
    lora = cfg.lora
    lora.use_preset = True
    lora.modem_preset = config_pb2.Config.LoRaConfig.ModemPreset.Value(preset_name)
    lora.region = config_pb2.Config.LoRaConfig.RegionCode.EU_868
    lora.hop_limit = 3
    lora.tx_enabled = True
    lora.tx_power = 27
    lora.sx126x_rx_boosted_gain = True
    cfg.bluetooth.enabled = False
    cfg.bluetooth.mode = config_pb2.Config.BluetoothConfig.PairingMode.FIXED_PIN
    cfg.bluetooth.fixed_pin = 123456
    cfg.security.serial_enabled = True
    cfg.version = DEVICE_STATE_VERSION
    return cfg


def _default_module_config() -> localonly_pb2.LocalModuleConfig:
    mod = localonly_pb2.LocalModuleConfig()
    mod.mqtt.address = "mqtt.meshtastic.org"
    mod.mqtt.username = "meshdev"
    mod.mqtt.password = "large4cats"  # noqa: S105 - the public default of every device, not a secret
    mod.mqtt.encryption_enabled = True
    mod.mqtt.root = "msh"
    mod.neighbor_info.update_interval = 14400
    for name in MODULE_FIELDS:
        getattr(mod, name).SetInParent()
    mod.version = DEVICE_STATE_VERSION
    return mod


def _default_channels() -> list[channel_pb2.Channel]:
    chans = [channel_pb2.Channel(index=i, role=channel_pb2.Channel.Role.DISABLED) for i in range(8)]
    primary = chans[0]
    primary.role = channel_pb2.Channel.Role.PRIMARY
    primary.settings.psk = DEFAULT_PSK
    primary.settings.module_settings.position_precision = 13
    return chans
