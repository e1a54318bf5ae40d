"""Serving the exported policy: the inference server (SageMaker's /ping and /invocations) and deployment.

Light on purpose: the server imports numpy, onnxruntime, starlette and uvicorn, never ray or torch.
"""
