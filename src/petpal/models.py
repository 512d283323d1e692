"""Every table of every service, imported in one place for Alembic."""

from petpal.identity import models as identity_models
from petpal.media import models as media_models
from petpal.pets import models as pets_models
from petpal.platform import jobs
from petpal.platform.db import Base
from petpal.social import models as social_models

metadata = Base.metadata

__all__ = [
    "identity_models",
    "jobs",
    "media_models",
    "metadata",
    "pets_models",
    "social_models",
]
