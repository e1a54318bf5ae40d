#!/bin/sh
# The image's entrypoint. SageMaker starts training containers as `IMAGE train` and inference containers as
# `IMAGE serve`; anything else runs as a plain command (e.g. `IMAGE rlrunner validate ...`).
set -e
case "$1" in
    train)
        shift
        # sagemaker-training's `train` runs the RLEstimator entry_point; xvfb-run gives a player that renders
        # a virtual display (players started with -nographics ignore it); the stop relay passes `docker stop`'s
        # SIGTERM to the launcher, which saves a checkpoint before it exits.
        exec python -m rlrunner.entry.stop_relay xvfb-run --auto-servernum --server-args="-screen 0 1024x768x24" train "$@"
        ;;
    serve)
        shift
        exec rlrunner serve /opt/ml/model --host 0.0.0.0 --port 8080 "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
