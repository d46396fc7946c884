"""A trained model meets images: the Predictor, batched and tiled inference with test-time augmentation, prediction
on your own images, stored probabilities."""
