"""The key ring a broker's settings name: the ``TOKENBROKER_KEYS`` value, or the key file."""

from __future__ import annotations

from tokenbroker.config import Settings
from tokenbroker.errors import ConfigError
from tokenbroker.vault.envelope import KeyRingProvider
from tokenbroker.vault.keyring import ReloadingKeyRing, StaticKeyRing, load_keyring


def keyring_provider(settings: Settings) -> KeyRingProvider:
    if settings.keys_env_value is not None:
        return StaticKeyRing(load_keyring(None, settings.keys_env_value.reveal()))
    if settings.key_file is None:
        raise ConfigError("no key file configured")
    return ReloadingKeyRing(settings.key_file)
