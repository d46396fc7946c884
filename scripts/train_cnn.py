"""Snakemake adapter: train one CNN (small CNN or InceptionResNetV2) on one variant."""
import pandas as pd

from nucleiflow.classification import study
from nucleiflow.classification.cnn import build_classifier, train_classifier
from nucleiflow.device import setup_device
from nucleiflow.io import write_csv
from nucleiflow.log import setup_logging

log = setup_logging(snakemake.log[0])
cnn = snakemake.params.cnn
augmented = pd.read_csv(snakemake.input.augmented[0]) if snakemake.input.augmented else None
train, test = study.training_sets(snakemake.input.root, pd.read_csv(snakemake.input.split), augmented)
setup = setup_device("auto", snakemake.threads)
model = build_classifier(snakemake.wildcards.model, pretrained=cnn["pretrained"], seed=snakemake.params.seed)
history = train_classifier(model, train, test, epochs=cnn["epochs"], batch_size=cnn["batch_size"], lr=cnn["lr"],
                           image_size=cnn["image_size"], device=setup.device, seed=snakemake.params.seed)
write_csv(snakemake.output[0], history)
log.info("%s/%s: final val accuracy %.4f", snakemake.wildcards.model, snakemake.wildcards.variant,
         history["val_accuracy"].iloc[-1])
