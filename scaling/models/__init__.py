"""Models: the ladders of timm architectures (the model-size axis), building a rung with weights, and published
weights as pre-training points. Knows nothing of Ray or MLflow."""
from scaling.models.ladders import LADDERS, Ladder, ModelError, Rung, count_params, flops_per_image, params, \
    published_tags, rung
from scaling.models.weights import HUB_FILES, check_weights, create_model, download, fetch_hub, hub_file, new_head, \
    read_state_dict, to_rgb

__all__ = ["LADDERS", "HUB_FILES", "Ladder", "ModelError", "Rung", "check_weights", "count_params", "create_model",
           "download", "fetch_hub", "flops_per_image", "hub_file", "new_head", "params", "published_tags",
           "read_state_dict", "rung", "to_rgb"]
