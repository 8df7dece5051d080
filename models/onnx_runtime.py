"""The network as ONNX, and ONNX Runtime as an inference engine with the module's interface.

``onnx_bytes(model)`` serialises a network (eval mode, dynamic batch / height / width);
``OnnxRuntimeNetwork(model)`` runs it on ONNX Runtime's CPU provider and returns the same dict of
torch tensors as the module, so that :class:`models.frontend.Frontend` can post-process it.
"""
from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import torch

OPSET = 17


class TupleOutputs(torch.nn.Module):
    """The network with its output dict as a tuple in a fixed order (what exporters need)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        return tuple(out[n] for n in self.names)


OUTPUTS = ("semi", "desc", "seg")  # the order of an exported network's outputs (those it has)


def output_names(model: torch.nn.Module) -> tuple[str, ...]:
    """``semi``, ``desc`` and, when the model has one, ``seg``."""
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 16, 16, device=next(model.parameters()).device))
    return tuple(n for n in OUTPUTS if n in out)


def onnx_bytes(model: torch.nn.Module, names: tuple[str, ...], sample: torch.Tensor) -> bytes:
    """The eval-mode network as an ONNX model (opset 17) with dynamic batch, height and width.

    Uses the TorchScript-based exporter (``dynamo=False``), which needs no package beyond torch
    and onnx. The wrapper is put in eval mode explicitly: the exporter restores the wrapper's
    training flag afterwards, recursively, and a fresh wrapper would switch ``model`` to training.
    """
    dynamic = {"image": {0: "batch", 2: "height", 3: "width"}}
    for n in names:
        dynamic[n] = {0: "batch", 2: f"{n}_height", 3: f"{n}_width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(TupleOutputs(model, names).eval(), (sample,), buffer, input_names=["image"],
                          output_names=list(names), dynamic_axes=dynamic, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    model.eval()
    return buffer.getvalue()


def cpu_session(model_bytes_or_path, threads: int | None = None):
    """An ONNX Runtime CPU session; worker threads do not spin after a run (they would starve the
    post-processing that follows on the same cores: 10x slower on 2 AVX-512 + VNNI + BF16 cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])


class OnnxRuntimeNetwork(torch.nn.Module):
    """A SuperPoint network run by ONNX Runtime on the CPU: ``model`` exported to ONNX in float32,
    or a given ONNX model (bytes or a file: the int8 one of ``models.int8``, an ``export_model``
    file).

    Called like the module: ``B x 1 x H x W`` float images -> ``{"semi", "desc"[, "seg"]}`` float32
    CPU tensors (the ONNX model's outputs by name), so that :class:`models.frontend.Frontend`
    post-processes it like any engine. The export of ``model`` takes a few seconds (AVX-512 + VNNI + BF16 CPU), once, at
    construction, from an eval-mode CPU copy (``model`` itself is left as it is).
    """

    def __init__(self, model: torch.nn.Module | None = None, threads: int | None = None,
                 onnx_model: bytes | str | None = None):
        super().__init__()
        if onnx_model is None:
            if model is None:
                raise ValueError("OnnxRuntimeNetwork: give a model or an ONNX model")
            cpu_model = copy.deepcopy(model).cpu().eval()
            onnx_model = onnx_bytes(cpu_model, output_names(cpu_model), torch.rand(1, 1, 64, 80))
        self.session = cpu_session(str(onnx_model) if not isinstance(onnx_model, bytes) else onnx_model, threads)
        self.names = tuple(o.name for o in self.session.get_outputs())

    def forward(self, images: torch.Tensor) -> dict:
        image = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        outs = self.session.run(list(self.names), {"image": image})
        return {n: torch.from_numpy(o) for n, o in zip(self.names, outs)}
