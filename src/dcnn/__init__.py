"""dcnn: deep convolutional neural networks for image classification, from LeNet-5 to NASNet."""

from dcnn.models import create_model, list_models, load_pretrained

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "load_pretrained"]
