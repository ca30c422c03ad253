"""Pictures for understanding data and models: augmentation grids."""

from dcnn.visualize.augment_grid import save_augmentation_grid

__all__ = ["save_augmentation_grid"]
