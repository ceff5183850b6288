"""The train worker: `TrainRequested` -> a training job -> a model version in the artefact store -> `ModelLogged`."""
