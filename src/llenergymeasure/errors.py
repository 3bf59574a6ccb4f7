"""Errors the CLI, the Ansible module and the callback turn into one-line messages."""


class LemError(Exception):
    """Base class: the message is shown to the user as it is."""


class ConfigError(LemError):
    """A campaign or experiment file is invalid; the message names file, key and value."""


class ManifestError(LemError):
    """A manifest cannot be read or written; the message names the file."""


class ManifestLockError(ManifestError):
    """Another process holds the lock of a manifest or campaign."""


class ExperimentError(LemError):
    """An experiment could not run; the message is a one-line cause."""
