"""Running a trained network: runners (PyTorch, ONNX Runtime), the one inference path, device choice and the
checked exports that let predict run a checkpoint without PyTorch. Below engine (training) and deploy."""
