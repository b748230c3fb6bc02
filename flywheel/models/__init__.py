"""Model versions and how they encode: the one loader, torch and ONNX encoders, query adapters, the registry."""
