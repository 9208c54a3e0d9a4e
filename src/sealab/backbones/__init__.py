from sealab.backbones.base import Backbone
from sealab.backbones.random_features import RandomReLUFeatures
from sealab.backbones.timm_backbone import TimmBackbone

__all__ = ["Backbone", "RandomReLUFeatures", "TimmBackbone"]
