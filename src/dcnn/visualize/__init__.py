"""Pictures for understanding data and models: augmentation grids, contact sheets of hard examples."""

from dcnn.visualize.augment_grid import save_augmentation_grid
from dcnn.visualize.contact_sheet import hardest_examples, save_contact_sheet

__all__ = ["hardest_examples", "save_augmentation_grid", "save_contact_sheet"]
