# The entry point SageMaker's training toolkit runs (RLEstimator's entry_point); rlrunner is installed in the image.
from rlrunner.entry.train_unity import main

raise SystemExit(main())
