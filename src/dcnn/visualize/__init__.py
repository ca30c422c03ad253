"""Pictures for understanding data and models: augmentation grids, contact sheets of hard examples,
training curves."""

from dcnn.visualize.augment_grid import save_augmentation_grid
from dcnn.visualize.contact_sheet import hardest_examples, save_contact_sheet
from dcnn.visualize.curves import curves_figure, save_training_curves

__all__ = ["curves_figure", "hardest_examples", "save_augmentation_grid", "save_contact_sheet",
           "save_training_curves"]
