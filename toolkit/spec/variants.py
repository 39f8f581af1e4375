"""The catalogue of export variants (precisions): names, what each is, and where it can be deployed.

Kept free of heavy imports: the spec validates variant names against it, and export, deploy and the
CLI read it.
"""

from __future__ import annotations

from dataclasses import dataclass

CPU = "cpu"
GPU = "gpu"
TARGETS = (CPU, GPU)


@dataclass(frozen=True)
class VariantInfo:
    """One export variant of a tier.

    Attributes:
        name: Variant name, used in the spec, the manifest and on the command line.
        engine: ``onnx`` (an ONNX file) or ``tensorrt`` (a serialized TensorRT engine).
        targets: Deploy targets the variant can run on.
        description: One line for ``--help`` and the README.
    """

    name: str
    engine: str
    targets: tuple[str, ...]
    description: str


VARIANTS: dict[str, VariantInfo] = {
    v.name: v
    for v in (
        VariantInfo("onnx-fp32", "onnx", (CPU, GPU), "the exported model, fp32"),
        VariantInfo(
            "onnx-fp16", "onnx", (CPU, GPU), "fp16 weights and compute; inputs and outputs stay fp32"
        ),
        VariantInfo(
            "onnx-int8-dynamic",
            "onnx",
            (CPU,),
            "int8 weights, activations quantized per request",
        ),
        VariantInfo(
            "onnx-int8-static",
            "onnx",
            (CPU, GPU),
            "int8 QDQ, activation ranges calibrated on generated requests",
        ),
        VariantInfo(
            "onnx-emb-int8", "onnx", (CPU,), "embedding tables row-wise int8 (per-row scale and offset)"
        ),
        VariantInfo(
            "onnx-emb-int4", "onnx", (CPU,), "embedding tables row-wise int4 (per-row scale and offset)"
        ),
        VariantInfo(
            "onnx-int8-emb-int4", "onnx", (CPU,), "onnx-int8-dynamic dense layers with int4 embedding tables"
        ),
        VariantInfo("trt-fp16", "tensorrt", (GPU,), "TensorRT engine built from onnx-fp16, strongly typed"),
        VariantInfo(
            "trt-int8", "tensorrt", (GPU,), "TensorRT engine built from the int8 QDQ model, strongly typed"
        ),
        VariantInfo(
            "trt-fp8",
            "tensorrt",
            (GPU,),
            "TensorRT engine built from an fp8 QDQ model, strongly typed (Ada+)",
        ),
    )
}
"""Every variant the toolkit can build, in the order they are built and listed."""

FP32 = "onnx-fp32"
"""The reference variant every other variant is made from."""

GPU_PREFERENCE = ("trt-fp16", "trt-int8", "trt-fp8", "onnx-fp16", "onnx-int8-static", FP32)
"""Order in which ``--target gpu`` picks among passing variants that have no GPU timing."""


ORT_TRT_PRECISION = {"onnx-fp32": "FP32", "onnx-fp16": "FP16", "onnx-int8-static": "INT8"}
"""``precision_mode`` of the TensorRT accelerator per ONNX variant (int8-static is QDQ: no calibration
table may be given)."""


def check_variant(name: str) -> None:
    """Raise ValueError unless ``name`` is a known variant."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}")
