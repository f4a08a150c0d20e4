"""Fine-tuning a pruned model by knowledge distillation from the original (ONNX in, ONNX out)."""

from mdp_trt.finetune.distill import FinetuneOptions, FinetuneResult, finetune

__all__ = ["FinetuneOptions", "FinetuneResult", "finetune"]
