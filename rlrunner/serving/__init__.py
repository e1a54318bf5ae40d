"""The inference server: what runs in the serving container (`IMAGE serve`) and behind `rlrunner serve`.

SageMaker's inference contract: GET /ping, POST /invocations on port 8080, the model in /opt/ml/model.
Light on purpose: it imports numpy, onnxruntime, starlette and uvicorn, never ray or torch. It may
import `rlrunner.policy` and `rlrunner.contract`; deployment to SageMaker endpoints (host side, AWS)
is `rlrunner.deploy`.
"""
