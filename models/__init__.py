"""SQLAlchemy 2 typed ORM models, one module per aggregate."""

from models.base import Base
from models.clusters import Cluster, ClusterLineage, ClusterMember, ClusterRun
from models.corrections import TagCorrection
from models.embeddings import Embedding
from models.items import Item, ReplacedEvent
from models.model_versions import ModelVersion
from models.rejected import RejectedEvent
from models.tags import ItemLabel, ItemTag, ItemTagging, Tag, Tagger, TagRenameLog, TaxonomyVersion
from models.training import TrainingPair

__all__ = [
    "Base",
    "Cluster",
    "ClusterLineage",
    "ClusterMember",
    "ClusterRun",
    "Embedding",
    "Item",
    "ItemLabel",
    "ItemTag",
    "ItemTagging",
    "ModelVersion",
    "RejectedEvent",
    "ReplacedEvent",
    "Tag",
    "TagCorrection",
    "TagRenameLog",
    "Tagger",
    "TaxonomyVersion",
    "TrainingPair",
]
