"""Runs an ONNX model with ONNX Runtime inside Triton's python backend.

For servers without the onnxruntime backend (such as the tritonserver in the nvidia-pytriton
wheel). The model file, thread count and output names come from the model's config.pbtxt.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    """Triton's entry point for an ONNX Runtime runner model."""

    def initialize(self, args: dict) -> None:
        """Open the ONNX Runtime session."""
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        here = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_thread_count", "1"))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = here / _parameter(config, "onnx_file", "model.onnx")
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests: list) -> list:
        """Run each request through the session; a failing request gets an error, others are unaffected."""
        responses = []
        for request in requests:
            try:
                feed = {
                    name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs
                }
                results = self.session.run(self.outputs, feed)
            except Exception as exc:
                message = f"{self.name}: ONNX Runtime failed: {exc}"
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL)
                    )
                )
                continue
            tensors = [
                pb_utils.Tensor(name, value) for name, value in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
