"""The environment variables Pulse's settings classes read, for checking the deployment files' env."""

import importlib

from pydantic import BaseModel
from pydantic_settings import BaseSettings

# Every module defining a settings class (imported so that the classes exist to be walked).
SETTINGS_MODULES = [
    "pulse.settings",
    "pulse.notifications.acceptance",
    "pulse.delivery.retry",
    "pulse.delivery.worker",
    "services.api.settings",
    "services.email_worker.settings",
    "services.sms_worker.settings",
    "services.push_worker.settings",
    "services.webhook_worker.settings",
    "services.realtime.worker",
    "services.realtime.settings",
    "services.scheduler.settings",
    "services.sandbox.settings",
]

# Read by the tools the images run, not by Pulse's settings.
OTHER_VARIABLES = {"FLOWER_BASIC_AUTH"}


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in [direct, *_subclasses(direct)]]


def pulse_variables() -> set[str]:
    """PREFIX + field (or the field's alias) of every settings class; nested settings blocks read their
    own, a nested plain model (a provider's `secondary`) is read as PREFIX + field + `__` + its field."""
    for module in SETTINGS_MODULES:
        importlib.import_module(module)
    names = set()
    for cls in _subclasses(BaseSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            block = field.annotation if isinstance(field.annotation, type) else None
            if block is not None and issubclass(block, BaseSettings):
                continue
            if block is not None and issubclass(block, BaseModel):
                names.update(f"{prefix}{name}__{inner}".upper() for inner in block.model_fields)
                continue
            alias = field.validation_alias
            names.add(alias if isinstance(alias, str) else (prefix + name).upper())
    return {name for name in names if name.startswith("PULSE_")}
