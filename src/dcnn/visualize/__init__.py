"""Pictures for understanding data and models: augmentation grids, contact sheets of hard examples
(imported here), and, imported from their modules because they load captum or the trainer:
inspect (the hardest training and test images of a run, `dcnn inspect`), attribution (Grad-CAM,
saliency, guided backprop, occlusion), deconvnet, features (filters, feature maps, top-9 patches),
figures (what `dcnn visualize` draws) and html_report (`dcnn report`). A run's training curves are
drawn by the trainer as it goes (:mod:`dcnn.train.curves`)."""

from dcnn.visualize.augment_grid import save_augmentation_grid
from dcnn.visualize.contact_sheet import hardest_examples, save_contact_sheet

__all__ = ["hardest_examples", "save_augmentation_grid", "save_contact_sheet"]
