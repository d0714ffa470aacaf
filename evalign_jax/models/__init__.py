"""Models: the HRNet backbone, SLPT / CMFA aligners, SSMER's SimSiam, and their registry."""

from evalign_jax.models.cmfa import CMFA
from evalign_jax.models.cmfa import aligner_from_slpt
from evalign_jax.models.cmfa import rgb_branch_from_slpt
from evalign_jax.models.hrnet import HRNet
from evalign_jax.models.hrnet import body_filter
from evalign_jax.models.registry import LANDMARK_MODELS
from evalign_jax.models.registry import MODELS
from evalign_jax.models.registry import ModelSpec
from evalign_jax.models.registry import build_model
from evalign_jax.models.registry import compute_dtype
from evalign_jax.models.registry import model_spec
from evalign_jax.models.simsiam import FrozenParam
from evalign_jax.models.simsiam import SimSiam
from evalign_jax.models.simsiam import encoder_body_state
from evalign_jax.models.simsiam import load_encoder_body
from evalign_jax.models.simsiam import negative_cosine
from evalign_jax.models.simsiam import simsiam_loss
from evalign_jax.models.slpt import SLPT
from evalign_jax.models.slpt import Buffer
from evalign_jax.models.slpt import RGBBranch
from evalign_jax.models.slpt import SparsePatchAligner
from evalign_jax.models.slpt import bilinear_sample
from evalign_jax.models.slpt import roi_sample_points
from evalign_jax.models.slpt import sample_patches

__all__ = [
    "Buffer", "CMFA", "FrozenParam", "HRNet", "LANDMARK_MODELS", "MODELS", "ModelSpec", "RGBBranch",
    "SLPT", "SimSiam", "SparsePatchAligner", "aligner_from_slpt", "bilinear_sample", "body_filter",
    "build_model",
    "compute_dtype", "encoder_body_state", "load_encoder_body", "model_spec", "negative_cosine",
    "rgb_branch_from_slpt", "roi_sample_points", "sample_patches", "simsiam_loss",
]
