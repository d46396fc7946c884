"""What a nucleus map is: training targets from instance maps, label-map helpers, and the post-processing
(marker-controlled watershed per target, its tuning, test-time augmentation) that turns a model's maps back into
nuclei."""
