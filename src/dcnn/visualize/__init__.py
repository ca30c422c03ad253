"""Pictures for understanding data and models: augmentation grids, contact sheets of hard examples,
training curves (imported here), and, imported from their modules because they load captum:
attribution (Grad-CAM, saliency, guided backprop, occlusion), deconvnet, features (filters, feature
maps, top-9 patches), figures (what `dcnn visualize` draws) and html_report (`dcnn report`)."""

from dcnn.visualize.augment_grid import save_augmentation_grid
from dcnn.visualize.contact_sheet import hardest_examples, save_contact_sheet
from dcnn.visualize.curves import curves_figure, save_training_curves

__all__ = ["curves_figure", "hardest_examples", "save_augmentation_grid", "save_contact_sheet",
           "save_training_curves"]
