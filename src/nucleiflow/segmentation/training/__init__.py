"""Training a segmentation model: the store as a torch dataset, augmentation pipelines, losses per target, what the
output channels mean (heads) and the trainer on the shared engine."""
